// GET /jobs/{id}/events over fetch (EventSource cannot send an Authorization header), resumed
// with Last-Event-ID whenever the connection drops, never delivering an event twice.
import { createParser } from "eventsource-parser";

import { LifeTalesError } from "./errors.js";
import { type Http, backoffMs, sleep } from "./http.js";
import type { DoneEvent, JobEvent } from "./types.js";

export interface EventsOptions {
  signal?: AbortSignal;
  /** Resume after this event id (what an earlier stream's last `onEvent` saw). */
  lastEventId?: number | string;
  /** Called once per event, in order. */
  onEvent?: (event: JobEvent) => void;
  /** Milliseconds without a byte (the API sends a keep-alive every 15 s) before the stream
   * counts as dropped and is reopened (default 45 s). */
  idleTimeoutMs?: number;
}

const DEFAULT_RETRY_MS = 2_000; // until the stream's own `retry:` says otherwise
const DEFAULT_IDLE_TIMEOUT_MS = 45_000;

/** Follows a job's events until its `done` event, which it resolves with; `undefined` when
 * `lastEventId` is already at or past `done`. Errors other than a dropped connection (401, 404)
 * reject; a dropped connection is reopened after the stream's `retry` delay (backing off
 * while it keeps failing). */
export async function followEvents(http: Http, jobId: string, options: EventsOptions = {}
): Promise<JobEvent<DoneEvent> | undefined> {
  const signal = options.signal;
  let lastId = options.lastEventId === undefined ? 0 : Number(options.lastEventId);
  let retryMs = DEFAULT_RETRY_MS;
  let failures = 0;
  for (;;) {
    const connection = new AbortController();
    let done: JobEvent<DoneEvent> | undefined;
    let received = false;
    const parser = createParser({
      onRetry: (ms) => { retryMs = ms; },
      onEvent: (message) => {
        if (signal?.aborted) return; // nothing more once the caller stopped listening
        const id = Number(message.id);
        // A resumed stream starts after lastId; anything at or before it was seen already.
        if (!Number.isFinite(id) || id <= lastId || done) return;
        lastId = id;
        received = true;
        const event = { id, type: message.event ?? "message", data: json(message.data) };
        options.onEvent?.(event as JobEvent);
        if (event.type === "done") done = event as JobEvent<DoneEvent>;
      },
    });
    try {
      const response = await http.open(`/api/v1/jobs/${encodeURIComponent(jobId)}/events`, {
        headers: { Accept: "text/event-stream", ...(lastId ? { "Last-Event-ID": String(lastId) } : {}) },
        signal: signal ? AbortSignal.any([signal, connection.signal]) : connection.signal,
        accept: [204],
      });
      if (response.status === 204) return undefined; // the stream was over already
      await read(response, parser.feed, connection, () => done !== undefined,
        options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
      if (done) return done;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof LifeTalesError && !error.transient) throw error;
      // Otherwise the connection failed or dropped: open it again below.
    } finally {
      connection.abort();
    }
    failures = received ? 1 : failures + 1;
    await sleep(failures <= 1 ? retryMs : retryMs + backoffMs(failures - 1, retryMs), signal);
  }
}

function json(data: string): unknown {
  try {
    return JSON.parse(data);
  } catch {
    return data; // every event of the API is JSON; anything else is handed over as it came
  }
}

/** Feeds the body to the parser until it ends, `finished()` turns true, or nothing arrives for
 * `idleMs` (then the connection is aborted, and reading throws). */
async function read(response: Response, feed: (chunk: string) => void,
                    connection: AbortController, finished: () => boolean, idleMs: number
): Promise<void> {
  if (!response.body) return;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let idle = setTimeout(() => connection.abort(), idleMs);
  try {
    while (!finished()) {
      const { value, done } = await reader.read();
      if (done) return;
      clearTimeout(idle);
      idle = setTimeout(() => connection.abort(), idleMs);
      feed(decoder.decode(value, { stream: true }));
    }
  } finally {
    clearTimeout(idle);
    await reader.cancel().catch(() => undefined); // already torn down: nothing to release
  }
}
