// Drop-in replacements for the frontend's Gemini service functions, with the same signatures:
// switching is an import change (plus `configure` once, with the signed-in user's token).
import { type LifeTalesClient, createClient } from "./client.js";
import { JobFailedError } from "./errors.js";
import type { ClientOptions } from "./http.js";
import type { Chapter, IllustrationRequest, Note, StoryResult, StorySettings } from "./types.js";

/** The frontend's Note (a moment). */
export interface FrontendNote {
  id: string;
  type?: string;
  timestamp: number;
  title?: string;
  textContent?: string;
  audioFileIds?: string[];
  transcriptions?: string[];
  imageFileIds?: string[];
  videoFileIds?: string[];
}

/** The frontend's Chapter; `sourceNoteId` is the frontend's own note id. */
export interface FrontendChapter {
  title: string;
  content: string;
  illustrationPrompt?: string;
  sourceNoteId?: string;
  userImageIds?: string[];
  generatedImageUrl?: string;
}

export interface GenerateStoryOptions {
  /** Each chapter the moment it is written (its image comes later). */
  onChapter?: (chapter: FrontendChapter, index: number) => void;
  /** Each image the moment it is drawn. */
  onIllustration?: (index: number, imageUrl: string) => void;
  /** Aborting cancels the story job. */
  signal?: AbortSignal;
  /** The space to tell; by default the user's newest space with this title (made if none). */
  spaceId?: string;
}

let configured: LifeTalesClient | undefined;

/** The client the functions below use: a LifeTalesClient, or the options to create one. */
export function configure(client: LifeTalesClient | ClientOptions): LifeTalesClient {
  configured = "jobs" in client ? client : createClient(client);
  return configured;
}

function api(): LifeTalesClient {
  if (!configured) {
    throw new Error("@lifetales/client/frontend: call configure({ baseUrl, token }) first");
  }
  return configured;
}

/** Audio (base64, a `data:` URL prefix allowed) to its text. */
export async function transcribeAudio(base64: string, mimeType: string): Promise<string> {
  const client = api();
  const audioData = base64.replace(/^data:[^,]*;base64,/, "");
  const job = await client.transcriptions.create({ audioData, mimeType }, { wait: 30 });
  const done = await client.jobs.wait(job);
  return done.result?.transcription ?? "";
}

/** An illustration's URL, or `undefined` when none could be drawn (the job failed). */
export async function generateIllustration(prompt: string, style: string
): Promise<string | undefined> {
  const client = api();
  try {
    const job = await client.illustrations.create(
      { prompt, style: style as IllustrationRequest["style"] }, { wait: 45 });
    return (await client.jobs.wait(job)).result?.imageUrl;
  } catch (error) {
    if (error instanceof JobFailedError) return undefined;
    throw error;
  }
}

/** Syncs the notes to the space (created, updated, and those no longer listed deleted),
 * generates its story, streams each chapter through `onChapter` as it is written, and resolves
 * with the final chapters and their image URLs. */
export async function generateStory(
  notes: FrontendNote[], spaceTitle: string, settings: StorySettings,
  options: GenerateStoryOptions = {},
): Promise<FrontendChapter[]> {
  const client = api();
  const spaceId = options.spaceId ?? await spaceNamed(client, spaceTitle);
  const serverIds = await syncNotes(client, spaceId, notes);
  const frontendIds = new Map([...serverIds].map(([mine, theirs]) => [theirs, mine]));
  const job = await client.stories.generate(spaceId, { settings }, { signal: options.signal });
  let done;
  try {
    done = await client.jobs.events(job.id, {
      signal: options.signal,
      onEvent: (event) => {
        if (event.type === "chapter") {
          const chapter = event.data as Chapter;
          options.onChapter?.(frontendChapter(chapter, frontendIds), chapter.position);
        } else if (event.type === "illustration") {
          const drawn = event.data as { position: number; imageUrl: string };
          options.onIllustration?.(drawn.position, drawn.imageUrl);
        }
      },
    });
  } catch (error) {
    if (options.signal?.aborted) await client.jobs.cancel(job.id);
    throw error;
  }
  const finished = await client.jobs.get<StoryResult>(job.id);
  if (done?.data.status !== "succeeded" || !finished.result) throw new JobFailedError(finished);
  const story = await client.stories.get(spaceId, finished.result.version);
  return story.chapters.map((chapter) => frontendChapter(chapter, frontendIds));
}

async function spaceNamed(client: LifeTalesClient, title: string): Promise<string> {
  const found = (await client.spaces.list()).find((space) => space.title === title);
  return found?.id ?? (await client.spaces.create({ title })).id;
}

// Which platform note stands for which frontend note, per space, for as long as the page lives
// (after a reload, notes are matched by timestamp instead).
const remembered = new Map<string, string>();

/** Mirrors the frontend's notes in the space; returns frontend id -> platform note id. The
 * frontend's transcriptions join the note's text: the platform tells what a note says. */
async function syncNotes(client: LifeTalesClient, spaceId: string, notes: FrontendNote[]
): Promise<Map<string, string>> {
  const existing = await client.notes.list(spaceId);
  const unclaimed = new Map(existing.map((note) => [note.id, note]));
  const ids = new Map<string, string>();
  const claim = (note: FrontendNote, candidate: Note | undefined): void => {
    if (candidate && unclaimed.has(candidate.id) && !ids.has(note.id)) {
      ids.set(note.id, candidate.id);
      unclaimed.delete(candidate.id);
    }
  };
  for (const note of notes) {
    claim(note, unclaimed.get(note.id) ?? unclaimed.get(remembered.get(`${spaceId}/${note.id}`) ?? ""));
  }
  for (const note of notes) {
    claim(note, [...unclaimed.values()].find((other) => other.timestamp === note.timestamp));
  }
  for (const stale of unclaimed.values()) await client.notes.delete(spaceId, stale.id);
  for (const note of notes) {
    const wanted = {
      timestamp: note.timestamp,
      title: note.title ?? null,
      textContent: [note.textContent, ...(note.transcriptions ?? [])]
        .filter((text) => text?.trim()).join("\n\n") || null,
    };
    const id = ids.get(note.id);
    const current = existing.find((other) => other.id === id);
    if (!id || !current) {
      ids.set(note.id, (await client.notes.create(spaceId, { type: "MOMENT", ...wanted })).id);
    } else if (current.timestamp !== wanted.timestamp || current.title !== wanted.title
               || current.textContent !== wanted.textContent) {
      await client.notes.update(spaceId, id, wanted);
    }
    remembered.set(`${spaceId}/${note.id}`, ids.get(note.id) ?? "");
  }
  return ids;
}

function frontendChapter(chapter: Chapter, frontendIds: Map<string, string>): FrontendChapter {
  const source = chapter.sourceNoteId ? frontendIds.get(chapter.sourceNoteId) : undefined;
  return {
    title: chapter.title,
    content: chapter.content,
    ...(chapter.illustrationPrompt ? { illustrationPrompt: chapter.illustrationPrompt } : {}),
    ...(source ? { sourceNoteId: source } : {}),
    ...(chapter.userImageIds?.length ? { userImageIds: chapter.userImageIds } : {}),
    ...(chapter.generatedImageUrl ? { generatedImageUrl: chapter.generatedImageUrl } : {}),
  };
}
