// What a story becomes on screen: its films (each a job: script, narration, render, upload),
// and narrations, a text spoken in a voice style (the frontend's text-to-speech server).
import type { Http } from "./http.js";
import { submitJob } from "./jobs.js";
import { spacePath } from "./spaces.js";
import type {
  Film, FilmRequest, FilmResult, Job, NarrationRequest, NarrationResult, SubmitOptions,
} from "./types.js";

export class Films {
  constructor(private readonly http: Http) {}

  /** Make a narrated film of the space's current story version: a `film` job whose events
   * carry its `script`, each scene's `narration` and the steps `script`, `narration`,
   * `render`, `upload`, `done`. A 422 when the space has no story yet. */
  generate(spaceId: string, request: FilmRequest = {}, options?: SubmitOptions
  ): Promise<Job<FilmResult>> {
    return submitJob<Job<FilmResult>>(this.http, `${spacePath(spaceId)}/film`, { json: request },
      options);
  }

  /** The current film (the newest ready one), or version N whatever its status. */
  async get(spaceId: string, version?: number): Promise<Film> {
    return (await this.http.request<Film>("GET", `${spacePath(spaceId)}/film`, {
      query: { version },
    })).data;
  }

  /** Every film of the space, newest first; `current` marks the one shown. */
  async list(spaceId: string): Promise<Film[]> {
    return (await this.http.request<Film[]>("GET", `${spacePath(spaceId)}/films`)).data;
  }
}

export class Narrations {
  constructor(private readonly http: Http) {}

  /** Speak a text (`{text, voiceStyle, language?}`); the job's result is a WAV file's
   * `audioUrl`, `mimeType` and `durationSeconds`. */
  create(request: NarrationRequest, options?: SubmitOptions): Promise<Job<NarrationResult>> {
    return submitJob<Job<NarrationResult>>(this.http, "/api/v1/narrations", { json: request },
      options);
  }
}
