// Admin-only routes (403 to everyone else): batch story regenerations and every user's jobs.
import type { Http } from "./http.js";
import { type JobQuery, jobQuery, submitJob } from "./jobs.js";
import type {
  AdminJob, Batch, BatchEstimate, Job, StoryRegenerationRequest, SubmitOptions,
} from "./types.js";

export class Batches {
  constructor(private readonly http: Http) {}

  /** Regenerate many stories as new versions: a `story_batch` job (`dryRun: true` answers an
   * estimate instead and creates nothing). */
  async regenerateStories(request: StoryRegenerationRequest & { dryRun: true }
  ): Promise<BatchEstimate>;
  async regenerateStories(request: StoryRegenerationRequest, options?: SubmitOptions
  ): Promise<Job>;
  async regenerateStories(request: StoryRegenerationRequest, options?: SubmitOptions
  ): Promise<Job | BatchEstimate> {
    return submitJob<Job | BatchEstimate>(this.http, "/api/v1/batches/story-regenerations",
      { json: request }, options);
  }

  /** Totals, percent done, estimated time remaining and cost so far. */
  async get(batchId: string): Promise<Batch> {
    return (await this.http.request<Batch>("GET", batchPath(batchId))).data;
  }

  /** Cancel every unfinished child and the fan-out. */
  async cancel(batchId: string): Promise<Batch> {
    return (await this.http.request<Batch>("POST", `${batchPath(batchId)}/cancel`)).data;
  }

  /** Queue the failed children again (409 when none failed). */
  async retryFailed(batchId: string): Promise<Batch> {
    return (await this.http.request<Batch>("POST", `${batchPath(batchId)}/retry-failed`)).data;
  }
}

export class Admin {
  constructor(private readonly http: Http) {}

  /** Every user's jobs; filter by `userId` too. */
  async jobs(query: JobQuery & { userId?: string } = {}): Promise<AdminJob[]> {
    return (await this.http.request<AdminJob[]>("GET", "/api/v1/admin/jobs", {
      query: jobQuery(query),
    })).data;
  }
}

function batchPath(batchId: string): string {
  return `/api/v1/batches/${encodeURIComponent(batchId)}`;
}
