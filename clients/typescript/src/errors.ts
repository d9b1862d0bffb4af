// The two ways a call fails: the API answered with an error (or did not answer at all), or a
// job it ran ended without succeeding.
import type { Job, JobError } from "./types.js";

/** The API's one error shape, `{code, status, message, errors}`. */
export interface ErrorBody {
  code: number;
  status: string;
  message: string;
  errors?: Record<string, unknown>;
}

/** A refused request (`code` is its HTTP status), or none answered (`code` 0). */
export class LifeTalesError extends Error {
  override readonly name = "LifeTalesError";
  /** The HTTP status code; 0 when no answer came (network failure or timeout). */
  readonly code: number;
  /** The HTTP status phrase ("Not Found"), or "Network Error" / "Timeout" when `code` is 0. */
  readonly status: string;
  /** Per location and field, what was wrong with the request (422). */
  readonly errors: Record<string, unknown> | undefined;
  /** Seconds the API asked to wait before trying again (429, 503), when it said. */
  readonly retryAfter: number | undefined;

  constructor(body: ErrorBody, options: { retryAfter?: number; cause?: unknown } = {}) {
    super(body.message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = body.code;
    this.status = body.status;
    this.errors = body.errors;
    this.retryAfter = options.retryAfter;
  }

  /** Worth trying the same call again later: no answer, 429, or a 5xx. */
  get transient(): boolean {
    return this.code === 0 || this.code === 429 || this.code >= 500;
  }
}

/** A job that ended `failed`, `canceled` or `expired`; `error` says why (`code`, `message`,
 * `retryable`, and `reason: "deadline"` when its deadline stopped it). */
export class JobFailedError extends Error {
  override readonly name = "JobFailedError";
  readonly job: Job<unknown>;
  readonly error: JobError;

  constructor(job: Job<unknown>) {
    const error: JobError = job.error ?? {
      code: job.status, message: `the job ended ${job.status}`, retryable: false,
    };
    super(`${job.kind} job ${job.status}: ${error.message}`);
    this.job = job;
    this.error = error;
  }

  /** The job's final status: `failed`, `canceled` or `expired`. */
  get status(): Job["status"] {
    return this.job.status;
  }
}
