// Films and narrations against the live platform: a real film (offline script and speech, a
// real ffmpeg render) of a two-chapter story, followed through its events, then read back.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  type FilmStep, type JobEvent, type JobProgress, LifeTalesError, type NarrationEvent,
  type VideoScript,
} from "../src/index.js";
import { assertEveryField, signedUpClient, spaceWithMoments, unique } from "./helpers.js";

/** The steps in the order they were first seen. */
function stepsOf(events: JobEvent[]): string[] {
  const steps = events.filter((e) => e.type === "progress").map((e) => (e.data as JobProgress).step);
  return steps.filter((step, i) => step !== steps[i - 1]);
}

test("films: a film of a story, its events (script, narrations, steps), get and list",
  async () => {
    const client = await signedUpClient();
    const { spaceId } = await spaceWithMoments(client, 2);
    await assert.rejects(client.films.generate(spaceId), (error: unknown) =>
      error instanceof LifeTalesError && error.code === 422 && /no story/.test(error.message));
    await assert.rejects(client.films.get(spaceId), (error: unknown) =>
      error instanceof LifeTalesError && error.code === 404);
    await client.jobs.wait(await client.stories.generate(spaceId, {}, { wait: 20 }));
    const story = await client.stories.get(spaceId);
    const chapterIds = story.chapters.map((c) => c.id);

    const job = await client.films.generate(spaceId, {
      settings: { voiceStyle: "calm", backgroundMusic: false } });
    assert.equal(job.kind, "film");
    const events: JobEvent[] = [];
    const done = await client.jobs.events(job.id, { onEvent: (event) => events.push(event) });
    assert.equal(done?.data.status, "succeeded", JSON.stringify(done?.data.error));

    // The script first, then each scene's audio as it exists, then the render.
    const steps: FilmStep[] = ["script", "narration", "render", "upload", "done"];
    assert.deepEqual(stepsOf(events), steps);
    const scripts = events.filter((e) => e.type === "script");
    assert.equal(scripts.length, 1);
    const script = scripts[0]?.data as VideoScript;
    assert.deepEqual(script.scenes.map((s) => s.chapterId), chapterIds);
    const narrations = events.filter((e) => e.type === "narration")
      .map((e) => e.data as NarrationEvent).sort((a, b) => a.sceneIndex - b.sceneIndex);
    assert.deepEqual(narrations.map((n) => [n.sceneIndex, n.chapterId]),
      chapterIds.map((id, i) => [i, id]));
    for (const narration of narrations) {
      assert.match(narration.audioUrl, /^http/);
      assert.ok(narration.durationSeconds > 0);
    }
    const firstRender = events.findIndex((e) => e.type === "progress"
      && (e.data as JobProgress).step === "render");
    const narrated = events.map((e) => e.type).lastIndexOf("narration");
    assert.ok(narrated < firstRender, "every scene is narrated before the render starts");

    const finished = await client.jobs.wait(job);
    const result = finished.result;
    assert.ok(result);
    assert.deepEqual(done?.data.result, result);
    assert.deepEqual([result.width, result.height, result.hasMusic, result.cached],
      [1280, 720, false, false]);
    assert.deepEqual(result.scenes.map((s) => s.chapterId), chapterIds);
    assert.ok(Math.abs(result.durationSeconds - (result.scenes.at(-1)?.endSeconds ?? 0)) < 1);
    // A real MP4 behind videoUrl, served in ranges (what lets a player seek).
    const head = await fetch(result.videoUrl, { headers: { Range: "bytes=0-11" },
      signal: AbortSignal.timeout(10_000) });
    assert.equal(head.status, 206);
    assert.equal(head.headers.get("content-type"), "video/mp4");
    assert.equal(Buffer.from(await head.arrayBuffer()).toString("latin1", 4, 8), "ftyp");
    assert.equal(Number(head.headers.get("content-range")?.split("/")[1]), result.sizeBytes);

    const film = await client.films.get(spaceId);
    await assertEveryField(film, "Film");
    assert.deepEqual([film.id, film.version, film.status, film.current, film.storyVersion],
      [result.filmId, result.version, "ready", true, story.version]);
    assert.equal(film.videoUrl, result.videoUrl);
    assert.deepEqual(film.script, script);
    assert.deepEqual(film.settings, { voiceStyle: "calm", backgroundMusic: false,
      narrativeTone: "cinematic" });

    // The same film again is answered from the cache, as a new version with the same files.
    const again = await client.jobs.wait(await client.films.generate(spaceId, {
      settings: { voiceStyle: "calm", backgroundMusic: false } }, { wait: 30 }));
    assert.deepEqual([again.result?.cached, again.result?.version, again.result?.videoUrl],
      [true, result.version + 1, result.videoUrl]);
    const films = await client.films.list(spaceId);
    assert.deepEqual(films.map((f) => [f.version, f.current]),
      [[result.version + 1, true], [result.version, false]]);
    assert.equal((await client.films.get(spaceId, result.version)).id, result.filmId);
    await assert.rejects(client.films.get(spaceId, 99), (error: unknown) =>
      error instanceof LifeTalesError && error.code === 404);
  });

test("narrations: a text spoken as WAV, typed; the same words again come from the cache",
  async () => {
    const client = await signedUpClient();
    const text = unique("We crossed the bridge at sunset");
    const job = await client.narrations.create({ text, voiceStyle: "warm", language: "en" },
      { wait: 30 });
    await assertEveryField(job, "Job");
    assert.deepEqual([job.kind, job.status], ["narration", "succeeded"]);
    const result = job.result;
    assert.ok(result);
    assert.deepEqual([result.mimeType, result.cached], ["audio/wav", false]);
    assert.ok(result.durationSeconds > 0);
    const audio = await fetch(result.audioUrl, { signal: AbortSignal.timeout(10_000) });
    assert.equal(Buffer.from(await audio.arrayBuffer()).toString("latin1", 0, 4), "RIFF");

    const again = await client.jobs.wait(
      await client.narrations.create({ text, voiceStyle: "warm", language: "en" }));
    assert.deepEqual([again.result?.cached, again.result?.audioUrl], [true, result.audioUrl]);

    await assert.rejects(client.narrations.create({ text: "   " }), (error: unknown) =>
      error instanceof LifeTalesError && error.code === 422
      && Object.keys((error.errors?.json ?? {}) as object).includes("text"));
  });
