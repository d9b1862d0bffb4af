// Jobs: how any submit is sent, and how a job is followed to its end (poll with ETags and
// Retry-After, cancel on abort) or watched live (events).
import { JobFailedError, LifeTalesError } from "./errors.js";
import { type EventsOptions, followEvents } from "./events.js";
import { type Http, type Query, backoffMs, retryAfterSeconds, sleep } from "./http.js";
import {
  type DoneEvent, type Job, type JobEvent, type JobKind, type JobResult, type JobStatus,
  type SubmitOptions, TERMINAL_STATUSES,
} from "./types.js";

// The Retry-After of the answer that created each job: the first wait honours it.
const submitRetryAfter = new WeakMap<object, number>();

/** POST a submission (JSON or multipart) with the submit headers; resolves with its answer,
 * the job (or what the route answers instead, as a batch's dry run). */
export async function submitJob<T extends object = Job>(
  http: Http, path: string, body: { json?: unknown; form?: FormData },
  options: SubmitOptions = {},
): Promise<T> {
  const headers: Record<string, string> = {};
  if (options.idempotencyKey) headers["Idempotency-Key"] = options.idempotencyKey;
  if (options.wait) headers.Prefer = `wait=${options.wait}`;
  if (options.cancelAfter) headers["Cancel-After"] = String(options.cancelAfter);
  const response = await http.request<T>("POST", path, {
    ...body, headers, signal: options.signal,
    timeoutMs: http.timeoutMs + (options.wait ?? 0) * 1000,
  });
  const retryAfter = retryAfterSeconds(response.headers);
  if (retryAfter !== undefined) submitRetryAfter.set(response.data, retryAfter);
  return response.data;
}

export interface WaitOptions<R = JobResult> {
  /** Aborting stops waiting and cancels the job (`POST /jobs/{id}/cancel`). */
  signal?: AbortSignal;
  /** Called with the job each time it changed. */
  onProgress?: (job: Job<R>) => void;
  /** Shortest pause between two polls in ms (default 1000); the API's Retry-After, when
   * longer, wins. */
  pollMs?: number;
}

export interface JobQuery {
  kind?: JobKind;
  status?: JobStatus;
  parentId?: string;
  page?: number;
  pageSize?: number;
}

/** The query string of a job listing (the API spells the page size `page_size`). */
export function jobQuery(query: JobQuery & { userId?: string }): Query {
  const { pageSize, ...rest } = query;
  return { ...rest, page_size: pageSize };
}

export class Jobs {
  constructor(private readonly http: Http) {}

  /** The user's jobs, newest first. */
  async list(query: JobQuery = {}): Promise<Job[]> {
    return (await this.http.request<Job[]>("GET", "/api/v1/jobs", { query: jobQuery(query) }))
      .data;
  }

  async get<R = JobResult>(id: string): Promise<Job<R>> {
    return (await this.http.request<Job<R>>("GET", jobPath(id))).data;
  }

  /** Cancel a queued job now, or ask a running one to stop at its next safe point. */
  async cancel<R = JobResult>(id: string): Promise<Job<R>> {
    return (await this.http.request<Job<R>>("POST", `${jobPath(id)}/cancel`)).data;
  }

  /** Resolves with the job once it succeeded; rejects with a JobFailedError if it failed, was
   * canceled or expired. Polls with If-None-Match (a 304 costs no body), never sooner than the
   * API's Retry-After; backs off on 429 (its Retry-After), 5xx and network errors. Aborting
   * `signal` cancels the job, then rejects with the signal's reason. */
  async wait<R = JobResult>(job: Job<R> | string, options: WaitOptions<R> = {}
  ): Promise<Job<R>> {
    const id = typeof job === "string" ? job : job.id;
    const pollMs = options.pollMs ?? 1000;
    let current = typeof job === "string" ? undefined : job;
    let delayMs = current ? Math.max(pollMs, (submitRetryAfter.get(current) ?? 0) * 1000) : 0;
    let etag: string | undefined;
    let failures = 0;
    try {
      while (!current || !TERMINAL_STATUSES.has(current.status)) {
        await sleep(delayMs, options.signal);
        try {
          const response = await this.http.request<Job<R>>("GET", jobPath(id), {
            headers: etag ? { "If-None-Match": etag } : {},
            accept: [304],
            signal: options.signal,
          });
          failures = 0;
          if (response.status !== 304) {
            current = response.data;
            etag = response.headers.get("ETag") ?? undefined;
            options.onProgress?.(current);
          }
          delayMs = Math.max(pollMs, (retryAfterSeconds(response.headers) ?? 0) * 1000);
        } catch (error) {
          if (!(error instanceof LifeTalesError) || !error.transient) throw error;
          failures += 1;
          delayMs = error.retryAfter !== undefined ? error.retryAfter * 1000
            : backoffMs(failures, Math.max(pollMs, 500));
        }
      }
    } catch (error) {
      if (options.signal?.aborted && error === options.signal.reason) {
        await this.cancel(id); // a failure to cancel is what the caller needs to hear
      }
      throw error;
    }
    if (current.status !== "succeeded") throw new JobFailedError(current);
    return current;
  }

  /** Follows the job's live events (`status`, `progress`, `error`, `done`; a story's
   * `chapter`, `illustration`, `restart`; a film's `script`, `narration`) and resolves with
   * `done`; see EventsOptions. */
  events(jobId: string, options: EventsOptions = {}): Promise<JobEvent<DoneEvent> | undefined> {
    return followEvents(this.http, jobId, options);
  }
}

function jobPath(id: string): string {
  return `/api/v1/jobs/${encodeURIComponent(id)}`;
}
