// The client's model types, all derived from the generated OpenAPI types (./openapi.ts).
// The API always sends every field of its resources (the tests check each one against the
// document), so answers are typed with every field present; request bodies keep the document's
// optional fields.
import type { components, paths } from "./openapi.js";

type Schemas = components["schemas"];
/** An answer of the API: every documented field present (possibly null). */
type Sent<T> = { -readonly [K in keyof T]-?: T[K] };

export type User = Sent<Schemas["User"]>;
export type Registered = Schemas["Registered"] & { user: User };
export type Token = Schemas["Token"];
export type Credentials = Schemas["Credentials"];
export type PasswordChange = Schemas["PasswordChange"];

/** The frontend's StorySettings; any field left out keeps the saved (or default) value. */
export type StorySettings = Schemas["StorySettings"];
export type FullStorySettings = Schemas["FullStorySettings"];

export type Space = Sent<Schemas["Space"]>;
export type SpaceDetail = Space & { notes: Note[] };
export type SpaceCreate = Schemas["SpaceCreate"];
export type SpaceUpdate = Schemas["SpaceUpdate"];

export type Media = Sent<Schemas["Media"]>;
/** A moment (the frontend's Note), with the media behind its file ids. */
export type Note = Omit<Sent<Schemas["Note"]>, "media"> & { media: Media[] };
export type NoteCreate = Partial<Schemas["NoteCreate"]>;
export type NoteUpdate = Schemas["NoteUpdate"];
/** An uploaded file; audio comes with the transcription job it started. */
export type MediaCreated = Omit<Sent<Schemas["MediaCreated"]>, "transcriptionJob"> & {
  transcriptionJob: Job<TranscriptionResult> | null;
};

/** The frontend's Chapter, with its id and position. */
export type Chapter = Sent<Schemas["Chapter"]>;
export type Story = Omit<Sent<Schemas["Story"]>, "chapters" | "missingIllustrations"> & {
  chapters: Chapter[];
  missingIllustrations: Sent<Schemas["MissingIllustration"]>[];
};
export type StoryVersion = Sent<Schemas["StoryVersion"]>;
export type StoryRequest = Partial<Schemas["StoryRequest"]>;
export type IllustrationRequest = Schemas["IllustrationRequest"];
export type TranscriptionRequest = Schemas["TranscriptionJson"];

/** What may change from the user's saved settings for one film. */
export type FilmSettings = Schemas["FilmSettings"];
export type FilmRequest = Schemas["FilmRequest"];
/** One scene of a film's `VideoScript` (the frontend's type): the narration of a chapter. */
export interface VideoScene {
  chapterId: string;
  narrationText: string;
  visualDescription: string;
  durationSeconds: number;
  transition: "fade" | "slide" | "zoom";
}
/** The script a film is made from (the frontend's `VideoScript`), one scene per chapter. */
export interface VideoScript {
  title: string;
  totalDurationSeconds: number;
  musicMood: "upbeat" | "calm" | "emotional" | "dramatic" | "neutral";
  scenes: VideoScene[];
}
/** Where a chapter's scene sits in the finished film. */
export type FilmScene = Sent<Schemas["FilmScene"]>;
/** A film version of a space; `videoUrl` and the rest once it is `ready`. */
export type Film = Omit<Sent<Schemas["Film"]>, "script" | "scenes"> & {
  script: VideoScript | null;
  scenes: FilmScene[] | null;
};
export type NarrationRequest = Schemas["NarrationRequest"];

export type JobStatus = NonNullable<Schemas["Job"]["status"]>;
/** The kinds the API documents (and any a newer API adds). */
type JobListQuery = NonNullable<paths["/api/v1/jobs"]["get"]["parameters"]["query"]>;
export type JobKind = NonNullable<JobListQuery["kind"]> | (string & {});
export type JobProgress = Sent<Schemas["JobProgress"]>;
/** Why a job did not succeed; `reason: "deadline"` when its deadline stopped it. */
export type JobError = Omit<Sent<Schemas["JobError"]>, "reason"> & { reason?: string };
/** A job; `R` is what its `result` holds once it has succeeded. */
export type Job<R = JobResult> = Omit<
  Sent<Schemas["Job"]>, "status" | "kind" | "result" | "error" | "progress"
> & {
  status: JobStatus;
  kind: JobKind;
  result: R | null;
  error: JobError | null;
  progress: JobProgress | null;
};
export type AdminJob = Job & { ownerId: string; queue: string; requestId: string | null };

/** `result` of a transcription job. */
export interface TranscriptionResult {
  transcription: string;
  mediaId: string;
  noteId: string | null;
  cached: boolean;
}
/** `result` of an illustration job. */
export interface IllustrationResult {
  imageUrl: string;
  width: number;
  height: number;
  mimeType: string;
  chapterId: string | null;
  cached: boolean;
}
/** `result` of a story job: the version it wrote, and the images that could not be drawn. */
export interface StoryResult {
  spaceId: string;
  storyId: string;
  version: number;
  chapterCount: number;
  illustrations: { total: number; succeeded: number; failed: number; canceled: number };
  illustrationErrors: {
    chapterId: string; chapterIndex: number | null; variant: number; code: string;
    message: string;
  }[];
}
/** `result` of a narration job: a WAV file. A film's narrations also name their scene. */
export interface NarrationResult {
  audioUrl: string;
  mimeType: string;
  durationSeconds: number;
  cached: boolean;
  chapterId?: string;
  sceneIndex?: number;
}
/** `result` of a film job: the film version it made (`cached`: an identical film's files). */
export interface FilmResult {
  filmId: string;
  spaceId: string;
  version: number;
  videoUrl: string;
  posterUrl: string;
  subtitlesUrl: string;
  durationSeconds: number;
  width: number;
  height: number;
  sizeBytes: number;
  scenes: FilmScene[];
  hasMusic: boolean;
  cached: boolean;
}
export type JobResult = TranscriptionResult | IllustrationResult | StoryResult | NarrationResult
  | FilmResult | Record<string, unknown>;

export type StoryRegenerationRequest = Schemas["StoryRegenerationRequest"];
export type BatchEstimate = Sent<Schemas["BatchEstimate"]>;
export type Batch = Sent<Schemas["Batch"]> & { totals: Sent<Schemas["BatchTotals"]> };
export type WebhookSecret = Sent<Schemas["WebhookSecret"]>;

/** One event of `GET /jobs/{id}/events`; `data` is JSON (a chapter, a progress step...). A
 * story sends `chapter`, `illustration` and `restart`; a film `script` and `narration`. */
export interface JobEvent<T = unknown> {
  id: number;
  type: "status" | "progress" | "chapter" | "illustration" | "restart" | "script" | "narration"
    | "error" | "done";
  data: T;
}
/** `data` of the last event, `done`. */
export interface DoneEvent {
  status: JobStatus;
  result: JobResult | null;
  error: JobError | null;
}
/** `data` of an `illustration` event: an image drawn for a chapter. */
export interface IllustrationEvent {
  chapterId: string;
  position: number;
  variant: number;
  imageUrl: string;
}

/** `data` of a film's `narration` event: a scene's audio, published as soon as it exists. */
export interface NarrationEvent {
  chapterId: string;
  sceneIndex: number;
  audioUrl: string;
  durationSeconds: number;
}
/** A film's `progress.step`s, in order (`render`: `current` percent of `total` 100). */
export type FilmStep = "script" | "narration" | "render" | "upload" | "done";

/** What any submit may add: the headers (`Idempotency-Key`, `Prefer`, `Cancel-After`). */
export interface SubmitOptions {
  /** A retried submit with the same key returns the same job (for 24 h). */
  idempotencyKey?: string;
  /** `Prefer: wait=N`: wait up to N seconds (at most 60) for the job to finish. */
  wait?: number;
  /** `Cancel-After`: the job's deadline in seconds from now. */
  cancelAfter?: number;
  signal?: AbortSignal;
}

export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set<JobStatus>(
  ["succeeded", "failed", "canceled", "expired"]);
