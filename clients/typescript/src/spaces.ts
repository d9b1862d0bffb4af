// Spaces and their moments (notes), with the moments' media files.
import type { Http } from "./http.js";
import type {
  MediaCreated, Note, NoteCreate, NoteUpdate, Space, SpaceCreate, SpaceDetail, SpaceUpdate,
} from "./types.js";

export class Spaces {
  constructor(private readonly http: Http) {}

  /** The user's spaces, newest first. */
  async list(): Promise<Space[]> {
    return (await this.http.request<Space[]>("GET", "/api/v1/spaces")).data;
  }

  async create(space: SpaceCreate): Promise<Space> {
    return (await this.http.request<Space>("POST", "/api/v1/spaces", { json: space })).data;
  }

  /** A space with its moments in time order. */
  async get(spaceId: string): Promise<SpaceDetail> {
    return (await this.http.request<SpaceDetail>("GET", spacePath(spaceId))).data;
  }

  async update(spaceId: string, changes: SpaceUpdate): Promise<Space> {
    return (await this.http.request<Space>("PATCH", spacePath(spaceId), { json: changes })).data;
  }

  /** Delete the space with its moments, media and stories. */
  async delete(spaceId: string): Promise<void> {
    await this.http.request("DELETE", spacePath(spaceId));
  }
}

export class Notes {
  constructor(private readonly http: Http) {}

  /** The space's moments, oldest first. */
  async list(spaceId: string): Promise<Note[]> {
    return (await this.http.request<Note[]>("GET", `${spacePath(spaceId)}/notes`)).data;
  }

  /** Add a moment; `timestamp` (ms since epoch) defaults to now. */
  async create(spaceId: string, note: NoteCreate): Promise<Note> {
    return (await this.http.request<Note>(
      "POST", `${spacePath(spaceId)}/notes`, { json: note })).data;
  }

  async get(spaceId: string, noteId: string): Promise<Note> {
    return (await this.http.request<Note>("GET", notePath(spaceId, noteId))).data;
  }

  async update(spaceId: string, noteId: string, changes: NoteUpdate): Promise<Note> {
    return (await this.http.request<Note>(
      "PATCH", notePath(spaceId, noteId), { json: changes })).data;
  }

  async delete(spaceId: string, noteId: string): Promise<void> {
    await this.http.request("DELETE", notePath(spaceId, noteId));
  }

  /** Attach an audio file or a photo (20 MB at most); audio starts a transcription job
   * (`transcriptionJob`, which `jobs.wait` follows). */
  async upload(spaceId: string, noteId: string, file: Blob, filename = fileName(file)
  ): Promise<MediaCreated> {
    const form = new FormData();
    form.append("file", file, filename);
    return (await this.http.request<MediaCreated>(
      "POST", `${notePath(spaceId, noteId)}/media`, { form })).data;
  }
}

function fileName(file: Blob): string {
  return "name" in file && typeof file.name === "string" && file.name ? file.name : "upload";
}

export function spacePath(spaceId: string): string {
  return `/api/v1/spaces/${encodeURIComponent(spaceId)}`;
}

function notePath(spaceId: string, noteId: string): string {
  return `${spacePath(spaceId)}/notes/${encodeURIComponent(noteId)}`;
}
