// The demo page in Chromium against the live platform, as a person uses it: sign up, a space,
// three moments and a voice note, then a story whose first chapter shows before the job is
// done and whose every image loads.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

import { createServer } from "vite";

import { apiUrl, unique, wavTone } from "../test/helpers.js";
import { TEST_PLATFORM_ENV } from "../test/platform.js";
import { launchChromium } from "./browser.js";

const CONFIG = fileURLToPath(new URL("../../demo/vite.config.ts", import.meta.url));

test("demo page: chapters stream in before the story is done, then every image loads",
  async () => {
    const port = Number(process.env[TEST_PLATFORM_ENV.pagePort]);
    assert.ok(port, `${TEST_PLATFORM_ENV.pagePort} is unset: run the tests with npm test`);
    // The page's origin is the one the platform's CORS_ORIGINS lists.
    const vite = await createServer({ configFile: CONFIG, logLevel: "error",
      server: { port, strictPort: true, host: "127.0.0.1" } });
    await vite.listen();
    const browser = await launchChromium();
    try {
      const page = await browser.context.newPage();
      const problems: string[] = [];
      page.on("pageerror", (error) => problems.push(error.message));
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(message.text());
      });
      await page.goto(`http://127.0.0.1:${port}/?api=${encodeURIComponent(apiUrl())}`);

      await page.fill("#email", `${unique("demo").replace(" ", "-")}@example.com`);
      await page.fill("#password", "a long enough password");
      await page.click("#signup");
      await page.getByText(/^Signed in as /).waitFor();

      await page.fill("#space-title", unique("Porto weekend"));
      await page.click("#create-space");
      await page.getByText(/^Space “Porto weekend/).waitFor();

      const moments = [["Arrival", "The train pulls into São Bento"],
        ["The bridge", "We cross the Dom Luís I bridge at sunset"],
        ["Dinner", "Grilled sardines by the river"]];
      for (const [index, [title, text]] of moments.entries()) {
        await page.locator(".moment-title").nth(index).fill(unique(title ?? ""));
        await page.locator(".moment-text").nth(index).fill(unique(text ?? ""));
      }
      await page.click("#add-moments");
      await page.locator("#moments li").nth(2).waitFor();

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
      await browser.close();
      await vite.close();
    }
  });
