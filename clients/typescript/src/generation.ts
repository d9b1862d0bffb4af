// What the models make, each a job: stories (with their versions), illustrations and
// transcriptions. A new kind of job is one more method calling submitJob.
import type { Http } from "./http.js";
import { submitJob } from "./jobs.js";
import { spacePath } from "./spaces.js";
import type {
  IllustrationRequest, IllustrationResult, Job, Story, StoryRequest, StoryResult,
  StoryVersion, SubmitOptions, TranscriptionRequest, TranscriptionResult,
} from "./types.js";

export class Stories {
  constructor(private readonly http: Http) {}

  /** Generate (or regenerate) the space's illustrated story: a `story` job whose events carry
   * each chapter as it is written. */
  generate(spaceId: string, request: StoryRequest = {}, options?: SubmitOptions
  ): Promise<Job<StoryResult>> {
    return submitJob<Job<StoryResult>>(this.http, `${spacePath(spaceId)}/story`, { json: request }, options);
  }

  /** The current story, or `version` N, with its chapters. */
  async get(spaceId: string, version?: number): Promise<Story> {
    return (await this.http.request<Story>("GET", `${spacePath(spaceId)}/story`, {
      query: { version },
    })).data;
  }

  /** Every version of the space's story, newest first; `current` marks the one shown. */
  async versions(spaceId: string): Promise<StoryVersion[]> {
    return (await this.http.request<StoryVersion[]>("GET", `${spacePath(spaceId)}/stories`))
      .data;
  }

  /** Draw again only the current story's missing illustrations (409 when none is missing). */
  retryIllustrations(spaceId: string, options?: SubmitOptions): Promise<Job<StoryResult>> {
    return submitJob<Job<StoryResult>>(this.http, `${spacePath(spaceId)}/story/illustrations/retry`, {}, options);
  }
}

export class Illustrations {
  constructor(private readonly http: Http) {}

  /** Draw one illustration (4:3); the job's result holds its `imageUrl`. */
  create(request: IllustrationRequest, options?: SubmitOptions
  ): Promise<Job<IllustrationResult>> {
    return submitJob<Job<IllustrationResult>>(this.http, "/api/v1/illustrations", { json: request }, options);
  }
}

export class Transcriptions {
  constructor(private readonly http: Http) {}

  /** Transcribe base64 audio (`{audioData, mimeType}`, as the frontend records it). */
  create(request: TranscriptionRequest, options?: SubmitOptions
  ): Promise<Job<TranscriptionResult>> {
    return submitJob<Job<TranscriptionResult>>(this.http, "/api/v1/transcriptions",
      { json: request }, options);
  }

  /** Transcribe an audio file, sent as multipart (no base64 inflation). */
  upload(file: Blob, fields: { noteId?: string; force?: boolean } = {},
         options?: SubmitOptions): Promise<Job<TranscriptionResult>> {
    const form = new FormData();
    form.append("file", file, "name" in file && typeof file.name === "string" ? file.name
      : "audio");
    if (fields.noteId) form.append("noteId", fields.noteId);
    if (fields.force !== undefined) form.append("force", String(fields.force));
    return submitJob<Job<TranscriptionResult>>(this.http, "/api/v1/transcriptions", { form },
      options);
  }
}
