// The demo page served by Vite on the origin the platform's CORS_ORIGINS lists, opened in
// Chromium, and the steps a person takes on it that several browser tests share.
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import type { Page } from "playwright-core";
import { type ViteDevServer, createServer } from "vite";

import { apiUrl, unique } from "../test/helpers.js";
import { TEST_PLATFORM_ENV } from "../test/platform.js";
import { type Browser, launchChromium } from "./browser.js";

const CONFIG = fileURLToPath(new URL("../../demo/vite.config.ts", import.meta.url));

export interface DemoPage {
  page: Page;
  browser: Browser;
  /** Errors the page logged or threw: a passing flow has none. */
  problems: string[];
  close(): Promise<void>;
}

/** The demo page talking to the test platform; `beforeLoad` runs before it loads (say, to add
 * an init script). */
export async function openDemoPage(beforeLoad?: (page: Page) => Promise<void>
): Promise<DemoPage> {
  const port = Number(process.env[TEST_PLATFORM_ENV.pagePort]);
  assert.ok(port, `${TEST_PLATFORM_ENV.pagePort} is unset: run the tests with npm test`);
  const vite: ViteDevServer = await createServer({ configFile: CONFIG, logLevel: "error",
    server: { port, strictPort: true, host: "127.0.0.1" } });
  await vite.listen();
  let browser: Browser | undefined;
  try {
    browser = await launchChromium();
    const page = await browser.context.newPage();
    const problems: string[] = [];
    page.on("pageerror", (error) => problems.push(error.message));
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text());
    });
    await beforeLoad?.(page);
    await page.goto(`http://127.0.0.1:${port}/?api=${encodeURIComponent(apiUrl())}`);
    const opened = browser;
    return { page, browser, problems, close: async () => {
      await opened.close();
      await vite.close();
    } };
  } catch (error) {
    await browser?.close();
    await vite.close();
    throw error;
  }
}

/** Sign up as a new user, then create a space. */
export async function signUpWithSpace(page: Page): Promise<void> {
  await page.fill("#email", `${unique("demo").replace(" ", "-")}@example.com`);
  await page.fill("#password", "a long enough password");
  await page.click("#signup");
  await page.getByText(/^Signed in as /).waitFor();
  await page.fill("#space-title", unique("Porto weekend"));
  await page.click("#create-space");
  await page.getByText(/^Space “Porto weekend/).waitFor();
}

/** Fill the first rows of the moment form (the page skips empty rows) and add them. */
export async function addMoments(page: Page, moments: readonly (readonly [string, string])[]
): Promise<void> {
  for (const [index, [title, text]] of moments.entries()) {
    await page.locator(".moment-title").nth(index).fill(unique(title));
    await page.locator(".moment-text").nth(index).fill(unique(text));
  }
  await page.click("#add-moments");
  await page.locator("#moments li").nth(moments.length - 1).waitFor();
}
