// Every resource of the client against the live platform, each answer held to the OpenAPI
// document (every documented field present, as the client's types promise).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { promisify } from "node:util";

import { type LifeTalesClient, LifeTalesError, createClient } from "../src/index.js";
import {
  apiUrl, assertEveryField, signedUpClient, spaceWithMoments, unique, wavTone,
} from "./helpers.js";
import { lifetalesBin } from "./platform.js";

const run = promisify(execFile);

test("auth: register, login, me, and a password change revokes older tokens", async () => {
  const email = `${randomUUID().slice(0, 12)}@example.com`;
  const client = createClient({ baseUrl: `${apiUrl()}/api` }); // the frontend's base URL form
  const registered = await client.auth.register({ email, password: "first password" });
  assert.equal(registered.tokenType, "Bearer");
  assert.equal(registered.user.email, email);
  await assertEveryField(await client.auth.me(), "User");

  const elsewhere = createClient({ baseUrl: apiUrl() });
  await elsewhere.auth.login({ email, password: "first password" });
  const changed = await client.auth.changePassword({
    currentPassword: "first password", newPassword: "second password" });
  assert.ok(changed.accessToken);
  assert.equal((await client.auth.me()).email, email); // the client took the new token
  await assert.rejects(elsewhere.auth.me(), (error: unknown) =>
    error instanceof LifeTalesError && error.code === 401);

  let asked = 0;
  const fromStore = createClient({ baseUrl: apiUrl(), getToken: async () => {
    asked += 1;
    return changed.accessToken;
  } });
  assert.equal((await fromStore.auth.me()).email, email);
  assert.equal(asked, 1);
});

test("settings: defaults, then saved", async () => {
  const client = await signedUpClient();
  const defaults = await client.settings.get();
  await assertEveryField(defaults, "FullStorySettings");
  assert.equal(defaults.storyMode, "chapter");
  const saved = await client.settings.update({ ...defaults, narrativeTone: "poetic",
    creativity: 1.5 });
  assert.equal(saved.narrativeTone, "poetic");
  assert.deepEqual(await client.settings.get(), saved);
});

test("spaces and notes: create, list, get, update, delete", async () => {
  const client = await signedUpClient();
  const space = await client.spaces.create({ title: "Lisbon", description: "a weekend" });
  await assertEveryField(space, "Space");
  assert.deepEqual((await client.spaces.list()).map((s) => s.id), [space.id]);
  assert.equal((await client.spaces.update(space.id, { title: "Lisboa" })).title, "Lisboa");

  const note = await client.notes.create(space.id, { title: "Tram 28", textContent: "Uphill",
    timestamp: 1_700_000_000_000 });
  await assertEveryField(note, "Note");
  assert.equal(note.type, "MOMENT");
  assert.equal((await client.notes.update(space.id, note.id, { title: "Tram" })).title, "Tram");
  assert.equal((await client.notes.get(space.id, note.id)).title, "Tram");
  const detail = await client.spaces.get(space.id);
  await assertEveryField(detail, "SpaceDetail");
  assert.deepEqual(detail.notes.map((n) => n.id), [note.id]);

  await client.notes.delete(space.id, note.id);
  assert.deepEqual(await client.notes.list(space.id), []);
  await client.spaces.delete(space.id);
  await assert.rejects(client.spaces.get(space.id), (error: unknown) =>
    error instanceof LifeTalesError && error.code === 404);
});

test("notes.upload: audio starts a transcription whose text lands on the moment", async () => {
  const client = await signedUpClient();
  const { spaceId, noteIds } = await spaceWithMoments(client, 1);
  const noteId = noteIds[0] ?? "";
  const media = await client.notes.upload(spaceId, noteId,
    new Blob([wavTone(1.3)], { type: "audio/wav" }), "voice.wav");
  await assertEveryField(media, "MediaCreated");
  assert.equal(media.kind, "audio");
  assert.ok(media.transcriptionJob);
  const done = await client.jobs.wait(media.transcriptionJob);
  assert.match(done.result?.transcription ?? "", /^\[offline transcription\] audio\/wav/);
  const note = await client.notes.get(spaceId, noteId);
  assert.deepEqual(note.audioFileIds, [media.id]);
  assert.deepEqual(note.transcriptions, [done.result?.transcription]);

  const photo = await client.notes.upload(spaceId, noteId,
    new Blob([await pngOf(client)], { type: "image/png" }));
  assert.equal(photo.kind, "image");
  assert.equal(photo.transcriptionJob, null);
});

async function pngOf(client: LifeTalesClient): Promise<Uint8Array<ArrayBuffer>> {
  const job = await client.jobs.wait(await client.illustrations.create(
    { prompt: unique("A lighthouse") }, { wait: 20 }));
  const image = await fetch(job.result?.imageUrl ?? "", { signal: AbortSignal.timeout(10_000) });
  return new Uint8Array(await image.arrayBuffer());
}

test("transcriptions: base64 JSON and multipart, with Prefer: wait", async () => {
  const client = await signedUpClient();
  const audio = wavTone(0.7);
  const job = await client.transcriptions.create({
    audioData: Buffer.from(audio).toString("base64"), mimeType: "audio/wav" }, { wait: 20 });
  await assertEveryField(job, "Job");
  assert.equal(job.status, "succeeded"); // Prefer: wait answered with the finished job
  const again = await client.transcriptions.upload(new Blob([audio], { type: "audio/wav" }));
  const done = await client.jobs.wait(again);
  assert.equal(done.result?.transcription, job.result?.transcription);
  assert.equal(done.result?.cached, true);
});

test("illustrations: a drawn image, and Idempotency-Key returns the same job", async () => {
  const client = await signedUpClient();
  const prompt = unique("A tram climbing a hill");
  const key = randomUUID();
  const first = await client.illustrations.create({ prompt, style: "pastel" },
    { idempotencyKey: key });
  const replay = await client.illustrations.create({ prompt, style: "pastel" },
    { idempotencyKey: key });
  assert.equal(replay.id, first.id);
  const done = await client.jobs.wait(first);
  assert.equal(done.result?.width, 800);
  assert.equal(done.result?.height, 600);
  const image = await fetch(done.result?.imageUrl ?? "", { signal: AbortSignal.timeout(10_000) });
  assert.equal(image.headers.get("content-type"), "image/png");
});

test("stories: generate, read, list versions; jobs: get, list, cancel", async () => {
  const client = await signedUpClient();
  const { spaceId, noteIds } = await spaceWithMoments(client, 2);
  const job = await client.stories.generate(spaceId, { settings: { imageStyle: "cinematic" } });
  assert.equal(job.kind, "story");
  await assertEveryField(await client.jobs.get(job.id), "Job");
  const done = await client.jobs.wait(job);
  assert.equal(done.result?.chapterCount, 2);

  const story = await client.stories.get(spaceId);
  await assertEveryField(story, "Story");
  assert.equal(story.version, done.result?.version);
  assert.deepEqual(story.chapters.map((c) => c.sourceNoteId), noteIds);
  for (const chapter of story.chapters) {
    await assertEveryField(chapter, "Chapter");
    assert.match(chapter.generatedImageUrl ?? "", /^http/);
  }
  assert.equal((await client.stories.get(spaceId, story.version)).version, story.version);
  const versions = await client.stories.versions(spaceId);
  await assertEveryField(versions[0], "StoryVersion");
  assert.deepEqual(versions.map((v) => [v.version, v.current]), [[story.version, true]]);
  // Nothing is missing, so there is nothing to redraw.
  await assert.rejects(client.stories.retryIllustrations(spaceId), (error: unknown) =>
    error instanceof LifeTalesError && error.code === 409);

  const listed = await client.jobs.list({ kind: "story" });
  assert.deepEqual(listed.map((j) => j.id), [job.id]);
  const illustrations = await client.jobs.list({ parentId: job.id, pageSize: 1 });
  assert.equal(illustrations.length, 1);
  assert.equal(illustrations[0]?.kind, "illustration");
  const canceled = await client.jobs.cancel(job.id); // already final: unchanged
  assert.equal(canceled.status, "succeeded");
});

test("webhooks: the signing secret, and rotating it", async () => {
  const client = await signedUpClient();
  const secret = await client.webhooks.secret();
  await assertEveryField(secret, "WebhookSecret");
  assert.match(secret.secret, /^whsec_/);
  const rotated = await client.webhooks.rotateSecret();
  assert.notEqual(rotated.secret, secret.secret);
  assert.equal((await client.webhooks.secret()).secret, rotated.secret);
});

test("batches and admin jobs: admins only", async () => {
  const user = await signedUpClient();
  await assert.rejects(user.batches.regenerateStories({ all: true, dryRun: true }),
    (error: unknown) => error instanceof LifeTalesError && error.code === 403);

  const admin = await signedUpClient();
  const me = await admin.auth.me();
  // As an operator does it: `lifetales users promote EMAIL`, on the platform's own state.
  // Run without blocking the event loop: a blocked loop cannot see the server close an idle
  // kept-alive socket, and the next request would go out on it.
  const promoted = await run(lifetalesBin(), ["users", "promote", me.email],
    { env: process.env, timeout: 60_000 });
  assert.match(promoted.stdout, /is now an admin/);

  const { spaceId } = await spaceWithMoments(admin, 1);
  const estimate = await admin.batches.regenerateStories({ spaceIds: [spaceId], dryRun: true });
  await assertEveryField(estimate, "BatchEstimate");
  assert.equal(estimate.spaces, 1);
  const batchJob = await admin.batches.regenerateStories({ spaceIds: [spaceId] });
  assert.equal(batchJob.kind, "story_batch");
  await admin.jobs.wait(batchJob, { pollMs: 500 });
  const batch = await admin.batches.get(batchJob.id);
  await assertEveryField(batch, "Batch");
  assert.equal(batch.totals.succeeded, 1);
  const retried = await admin.batches.retryFailed(batchJob.id); // none failed: unchanged
  assert.deepEqual([retried.status, retried.totals.failed], ["succeeded", 0]);
  assert.equal((await admin.batches.cancel(batchJob.id)).status, "succeeded"); // already over
  const children = await admin.admin.jobs({ parentId: batchJob.id });
  assert.deepEqual(children.map((child) => [child.kind, child.ownerId]), [["story", me.id]]);
});
