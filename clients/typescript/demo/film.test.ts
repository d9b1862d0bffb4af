// Issue 14's judged flow in Chromium: a person makes a story and its film on the demo page
// against the live platform (offline provider, a real ffmpeg render), and the MP4 (H.264 +
// AAC, as the server ships it) plays in a <video> element to its `ended` event, with its
// WebVTT subtitles loaded.
import assert from "node:assert/strict";
import { test } from "node:test";

import type { Page } from "playwright-core";

import type { FilmStep } from "../src/index.js";
import { addMoments, openDemoPage, signUpWithSpace } from "./page.js";

/** Media events anywhere in the page, in order, as `type #id` (recorded from the first
 * script on, so none is missed however soon the video starts). */
async function recordMediaEvents(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const seen: string[] = [];
    Object.assign(window, { mediaEvents: seen });
    for (const type of ["playing", "ended", "error"]) {
      // Media events do not bubble: caught on their way down instead.
      document.addEventListener(type, (event) => {
        seen.push(`${type} #${(event.target as HTMLElement | null)?.id ?? ""}`);
      }, true);
    }
  });
}

/** What the page's <video> did, with what the browser says of H.264. */
function videoState(page: Page) {
  return page.evaluate(() => {
    const video = document.querySelector<HTMLVideoElement>("#film");
    if (!video) throw new Error("no #film");
    const cues = [...video.textTracks[0]?.cues ?? []] as VTTCue[];
    return {
      error: video.error && `${video.error.code} ${video.error.message}`,
      width: video.videoWidth, height: video.videoHeight,
      duration: video.duration, currentTime: video.currentTime, paused: video.paused,
      readyState: video.readyState, networkState: video.networkState,
      frames: video.getVideoPlaybackQuality().totalVideoFrames,
      h264: video.canPlayType('video/mp4; codecs="avc1.640028, mp4a.40.2"'),
      source: video.currentSrc, cues: cues.map((cue) => cue.text),
      events: (window as unknown as { mediaEvents: string[] }).mediaEvents,
    };
  });
}

const words = (text: string): string => text.replace(/\s+/g, " ").trim();

test("film in Chromium: made on the demo page, its MP4 plays to the end with subtitles",
  async (t) => {
    const { page, browser, problems, close } = await openDemoPage(recordMediaEvents);
    const videoAnswers: string[] = [];
    page.on("response", (response) => {
      if (response.url().endsWith("/video.mp4")) {
        videoAnswers.push(`${response.status()} ${response.headers()["content-type"]}`);
      }
    });
    try {
      await signUpWithSpace(page);
      await addMoments(page, [["Arrival", "The train pulls into São Bento"],
        ["Dinner", "Grilled sardines by the river"]]);
      await page.click("#generate");
      await page.locator("#job[data-final='succeeded']").waitFor({ timeout: 60_000 });

      await page.click("#make-film");
      await page.locator("#film-job[data-final]").waitFor({ timeout: 240_000 });
      const status = await page.locator("#film-job").textContent() ?? "";
      const made = /^succeeded: ([\d.]+) s, 1280×720$/.exec(status);
      assert.ok(made, `the film was not made: ${status}`);
      const steps: FilmStep[] = ["script", "narration", "render", "upload", "done"];
      assert.deepEqual(await page.locator("#film-steps li").evaluateAll((items) =>
        items.map((item) => (item as HTMLElement).dataset.step)), steps);
      assert.equal(await page.locator("#narrations li").count(), 2);

      // Muted, it autoplays; a person would watch it to the end (or see it fail).
      const seconds = Number(made[1]);
      await page.waitForFunction(() => {
        const video = document.querySelector<HTMLVideoElement>("#film");
        return video?.ended || video?.error;
      }, undefined, { timeout: (seconds + 90) * 1000 }).catch(async (error: unknown) => {
        throw new Error(`${String(error)}: ${JSON.stringify(await videoState(page))}`);
      });
      const played = await videoState(page);
      await page.screenshot({ path: browser.screenshotPath("4-film"), fullPage: true });
      const shown = JSON.stringify(played);
      t.diagnostic(`${played.source}: ${played.duration} s played, ${played.frames} frames `
        + `decoded; canPlayType(H.264 High + AAC) = ${played.h264}`);
      assert.equal(played.error, null, shown);
      assert.deepEqual([played.width, played.height], [1280, 720], shown);
      assert.deepEqual(played.events, ["playing #film", "ended #film"], shown);
      assert.ok(Math.abs(played.duration - seconds) < 0.5, shown);
      assert.equal(played.currentTime, played.duration, shown);
      // Decoded frames, not a poster: at least half of 30 fps got through a loaded machine.
      assert.ok(played.frames >= seconds * 15, shown);
      assert.match(played.source, /\/video\.mp4$/, shown);
      assert.ok(videoAnswers.length > 0 && videoAnswers.every((answer) =>
        /^20[06] video\/mp4$/.test(answer)), videoAnswers.join(", "));

      // The subtitle track (WebVTT from the platform's origin) holds the script's words.
      const script = words(await page.locator("#film-script").textContent() ?? "");
      assert.ok(played.cues.length >= 2, shown);
      for (const cue of played.cues) assert.ok(script.includes(words(cue)), `${cue} | ${script}`);
      assert.deepEqual(problems, []);
    } finally {
      await close();
    }
  });
