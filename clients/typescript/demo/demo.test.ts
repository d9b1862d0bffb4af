// The demo page in Chromium against the live platform, as a person uses it: sign up, a space,
// three moments and a voice note, then a story whose first chapter shows before the job is
// done and whose every image loads.
import assert from "node:assert/strict";
import { test } from "node:test";

import { wavTone } from "../test/helpers.js";
import { addMoments, openDemoPage, signUpWithSpace } from "./page.js";

test("demo page: chapters stream in before the story is done, then every image loads",
  async () => {
    const { page, browser, problems, close } = await openDemoPage();
    try {
      await signUpWithSpace(page);
      const moments = [["Arrival", "The train pulls into São Bento"],
        ["The bridge", "We cross the Dom Luís I bridge at sunset"],
        ["Dinner", "Grilled sardines by the river"]] as const;
      await addMoments(page, moments);

      await page.setInputFiles("#audio", { name: "voice-note.wav", mimeType: "audio/wav",
        buffer: Buffer.from(wavTone(1.5)) });
      await page.click("#upload-audio");
      await page.getByText(/^Transcription: \[offline transcription\] audio\/wav/).waitFor();
      await page.screenshot({ path: browser.screenshotPath("1-transcription"), fullPage: true });

      await page.click("#generate");
      const firstTitle = page.locator("#chapters li h3").first();
      await firstTitle.waitFor({ timeout: 30_000 });
      // What the page shows as the first chapter appears: the job is still running.
      const shown = await page.evaluate(() => ({
        chapters: document.querySelectorAll("#chapters li").length,
        status: document.querySelector("#job")?.textContent ?? "",
        final: (document.querySelector("#job") as HTMLElement | null)?.dataset.final,
      }));
      await page.screenshot({ path: browser.screenshotPath("2-first-chapter"), fullPage: true });
      assert.equal(shown.final, undefined, JSON.stringify(shown));
      assert.match(shown.status, /^running/, JSON.stringify(shown));
      assert.ok(shown.chapters < moments.length, JSON.stringify(shown));
      assert.match(await firstTitle.textContent() ?? "", /^Arrival/);

      await page.locator("#job[data-final='succeeded']").waitFor({ timeout: 60_000 });
      assert.equal(await page.locator("#chapters li h3").count(), moments.length);
      await page.waitForFunction(() => [...document.querySelectorAll("#chapters img")]
        .every((image) => (image as HTMLImageElement).complete), undefined, { timeout: 30_000 });
      const widths = await page.locator("#chapters img").evaluateAll((images) =>
        images.map((image) => (image as HTMLImageElement).naturalWidth));
      assert.deepEqual(widths, moments.map(() => 800), "every image loaded, 800 px wide");
      await page.screenshot({ path: browser.screenshotPath("3-story"), fullPage: true });
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });
