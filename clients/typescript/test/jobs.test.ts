// jobs.wait against the live platform: If-None-Match and 304s, the Retry-After of a 202 and of
// a 429, cancel through AbortSignal, and the JobFailedError of a job that did not succeed.
import assert from "node:assert/strict";
import { test } from "node:test";

import { type Job, JobFailedError, type LifeTalesClient, LifeTalesError } from "../src/index.js";
import { type Exchange, recordingFetch, signedUpClient, spaceWithMoments, unique } from "./helpers.js";
import { WORKER_CONCURRENCY } from "./platform.js";

const SLACK_MS = 15; // timers fire late, never early; this covers clock granularity only

function polls(exchanges: Exchange[], jobId: string): Exchange[] {
  return exchanges.filter((e) => e.method === "GET" && e.path === `/api/v1/jobs/${jobId}`);
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await new Promise((done) => setTimeout(done, 700)); // well within the polling budget
  }
}

/** Stories that keep every worker thread writing for a few seconds. */
async function busyWorkers(client: LifeTalesClient): Promise<Job[]> {
  const jobs: Job[] = [];
  for (let i = 0; i < WORKER_CONCURRENCY; i += 1) {
    const { spaceId } = await spaceWithMoments(client, 5);
    jobs.push(await client.stories.generate(spaceId));
  }
  await until("every worker thread busy", async () => {
    const states = await Promise.all(jobs.map((job) => client.jobs.get(job.id)));
    return states.every((job) => job.status === "running");
  });
  return jobs;
}

test("wait: first poll after the 202's Retry-After, then If-None-Match and 304s", async () => {
  const busy = await signedUpClient();
  const stories = await busyWorkers(busy);
  const { fetch, exchanges } = recordingFetch();
  const client = await signedUpClient({ fetch });
  const job = await client.illustrations.create({ prompt: unique("A harbour at dawn") });
  const seen: Job[] = [];
  const done = await client.jobs.wait(job, { pollMs: 100, onProgress: (j) => seen.push(j) });
  assert.equal(done.status, "succeeded");

  const submit = exchanges.find((e) => e.path === "/api/v1/illustrations");
  assert.equal(submit?.status, 202);
  const gets = polls(exchanges, job.id);
  // The queued job waited behind the busy workers: unchanged answers were 304s.
  assert.ok(gets.filter((e) => e.status === 304).length >= 1, gets.map((e) => e.status).join());
  const retryAfter = (e: Exchange): number => Number(e.headers.get("Retry-After") ?? 0) * 1000;
  assert.ok((gets[0]?.sentAt ?? 0) - (submit?.sentAt ?? 0) >= retryAfter(submit!) - SLACK_MS);
  let etag: string | null = null;
  gets.forEach((poll, i) => {
    assert.equal(poll.requestHeaders.get("If-None-Match"), etag, `poll ${i}`);
    if (poll.status === 200) etag = poll.headers.get("ETag");
    const previous = gets[i - 1];
    if (previous) {
      const gap = poll.sentAt - previous.sentAt;
      assert.ok(gap >= Math.max(100, retryAfter(previous)) - SLACK_MS, `gap ${gap} ms`);
    }
  });
  // onProgress heard every change and nothing else.
  assert.equal(seen.length, gets.filter((e) => e.status === 200).length);
  await Promise.all(stories.map((story) => busy.jobs.wait(story)));
});

test("wait: a 429 is waited out for its Retry-After, then polling goes on", async () => {
  const { fetch, exchanges } = recordingFetch();
  const client = await signedUpClient({ fetch });
  const job = await client.illustrations.create({ prompt: unique("A kite") }, { wait: 20 });
  assert.equal(job.status, "succeeded");
  // Spend the user's polling budget, until refused with time to spare before it refills.
  let refused: LifeTalesError | undefined;
  for (let i = 0; i < 40 && !refused; i += 1) {
    await client.jobs.get(job.id).catch((error: unknown) => {
      if (!(error instanceof LifeTalesError)) throw error;
      const reset = Number(exchanges.at(-1)?.headers.get("RateLimit-Reset"));
      if (error.code === 429 && reset >= 2) refused = error;
    });
  }
  assert.ok(refused, "the polling budget was never exhausted");
  assert.equal(refused.status, "Too Many Requests");
  assert.ok((refused.retryAfter ?? 0) >= 1);

  const before = exchanges.length;
  const done = await client.jobs.wait(job.id);
  assert.equal(done.id, job.id);
  const gets = exchanges.slice(before);
  assert.deepEqual(gets.map((e) => e.status), [429, 200]);
  const waited = (gets[1]?.sentAt ?? 0) - (gets[0]?.sentAt ?? 0);
  assert.ok(waited >= Number(gets[0]?.headers.get("Retry-After")) * 1000 - SLACK_MS,
    `waited ${waited} ms`);
});

test("wait: aborting the signal cancels the job", async () => {
  const { fetch, exchanges } = recordingFetch();
  const client = await signedUpClient({ fetch });
  const { spaceId } = await spaceWithMoments(client, 4);
  const job = await client.stories.generate(spaceId);
  const controller = new AbortController();
  await assert.rejects(client.jobs.wait(job, {
    signal: controller.signal, pollMs: 200,
    onProgress: (j) => { if (j.status === "running") controller.abort(); },
  }), (error: unknown) => error instanceof DOMException && error.name === "AbortError");
  assert.equal(exchanges.at(-1)?.path, `/api/v1/jobs/${job.id}/cancel`);
  assert.equal(exchanges.at(-1)?.status, 200);

  await until("the job canceled", async () =>
    (await client.jobs.get(job.id)).status === "canceled");
  const versions = await client.stories.versions(spaceId);
  assert.ok(versions.every((v) => !v.current), "a canceled story is never published");
});

test("wait: a job canceled elsewhere rejects with JobFailedError", async () => {
  const client = await signedUpClient();
  const { spaceId } = await spaceWithMoments(client, 4);
  const job = await client.stories.generate(spaceId);
  const waiting = client.jobs.wait(job, { pollMs: 200 });
  await client.jobs.cancel(job.id);
  await assert.rejects(waiting, (error: unknown) => {
    assert.ok(error instanceof JobFailedError);
    assert.equal(error.status, "canceled");
    assert.equal(error.error.code, "canceled");
    assert.equal(error.job.id, job.id);
    return true;
  });
});

test("wait: a deadline (Cancel-After) that stops the job rejects with its reason", async () => {
  const client = await signedUpClient();
  const { spaceId } = await spaceWithMoments(client, 5);
  const job = await client.stories.generate(spaceId, {}, { cancelAfter: 2 });
  assert.ok(job.deadlineAt);
  await assert.rejects(client.jobs.wait(job, { pollMs: 200 }), (error: unknown) => {
    assert.ok(error instanceof JobFailedError);
    // Running at its deadline it is stopped (canceled); not yet started, it expires.
    if (error.status === "canceled") assert.equal(error.error.reason, "deadline");
    else assert.equal(error.status, "expired");
    return true;
  });
});
