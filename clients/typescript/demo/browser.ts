// Debian's Chromium driven by playwright-core, with a fresh profile each time; screenshots go
// to demo/screenshots/ (not in git).
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { type BrowserContext, chromium } from "playwright-core";

import { PACKAGE_DIR } from "../scripts/types.js";

export const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SCREENSHOTS = resolve(PACKAGE_DIR, "demo/screenshots");
// Playwright adds --headless itself. Nothing phones home: no updates, sync or QUIC probes.
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

export interface Browser {
  context: BrowserContext;
  screenshotPath(name: string): string;
  close(): Promise<void>;
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: apt-get install chromium (.ci/run does), `
      + "or set CHROMIUM_PATH");
  }
  const profile = mkdtempSync(join(tmpdir(), "lifetales-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS,
    viewport: { width: 1100, height: 1600 },
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
  return {
    context,
    screenshotPath: (name) => join(SCREENSHOTS, `${name}.png`),
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
