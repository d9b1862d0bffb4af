// The drop-in functions, with the frontend's own signatures and types.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  type FrontendChapter, type FrontendNote, configure, generateIllustration, generateStory,
  transcribeAudio,
} from "../src/frontend.js";
import { signedUpClient, unique, wavTone } from "./helpers.js";

test("transcribeAudio: base64 (with or without a data: prefix) to text", async () => {
  configure(await signedUpClient());
  const base64 = Buffer.from(wavTone(0.9)).toString("base64");
  const text = await transcribeAudio(base64, "audio/wav");
  assert.match(text, /^\[offline transcription\] audio\/wav, 14\.1 KB/);
  assert.equal(await transcribeAudio(`data:audio/wav;base64,${base64}`, "audio/wav"), text);
});

test("generateIllustration: an image URL", async () => {
  configure(await signedUpClient());
  const url = await generateIllustration(unique("A red tram"), "cinematic");
  const image = await fetch(url ?? "", { signal: AbortSignal.timeout(10_000) });
  assert.equal(image.status, 200);
  assert.equal(image.headers.get("content-type"), "image/png");
});

test("generateStory: syncs the notes, streams chapters, ends with their images", async () => {
  const client = configure(await signedUpClient());
  const title = unique("Summer in Porto");
  const notes: FrontendNote[] = [1, 2, 3].map((i) => ({
    id: `local-${i}`, type: "MOMENT", timestamp: 1_700_000_000_000 + i * 3_600_000,
    title: unique(`Day ${i}`), textContent: unique("We walked"),
    ...(i === 2 ? { transcriptions: ["The river was loud"] } : {}),
  }));
  const streamed: [number, FrontendChapter][] = [];
  const chapters = await generateStory(notes, title, { storyMode: "chapter" }, {
    onChapter: (chapter, index) => streamed.push([index, chapter]),
  });
  assert.deepEqual(chapters.map((c) => c.sourceNoteId), ["local-1", "local-2", "local-3"]);
  assert.deepEqual(streamed.map(([index, c]) => [index, c.title]),
    chapters.map((c, index) => [index, c.title]));
  assert.equal(streamed[0]?.[1].generatedImageUrl, undefined); // images come after the text
  for (const chapter of chapters) assert.match(chapter.generatedImageUrl ?? "", /^http.*\/media\//);
  assert.match(chapters[1]?.content ?? "", /The river was loud/);

  // Again, one note edited, one gone, one new: the same space, mirrored.
  const [spaceBefore] = await client.spaces.list();
  const edited = [{ ...notes[0]!, title: "Day one, edited" }, notes[2]!,
    { id: "local-4", timestamp: 1_700_100_000_000, textContent: unique("Home") }];
  const again = await generateStory(edited, title, { storyMode: "chapter" });
  assert.deepEqual(again.map((c) => c.sourceNoteId), ["local-1", "local-3", "local-4"]);
  assert.equal(again[0]?.title, "Day one, edited");
  const spaces = await client.spaces.list();
  assert.deepEqual(spaces.map((s) => s.id), [spaceBefore?.id]);
  assert.equal((await client.notes.list(spaceBefore?.id ?? "")).length, 3);
});
