// /api/docs in Chromium with every other origin unreachable (as on a machine with no
// internet): Swagger UI loads from the API itself and lists every operation.
import assert from "node:assert/strict";
import { test } from "node:test";

import { apiUrl, openapiDocument } from "../test/helpers.js";
import { launchChromium } from "./browser.js";

const METHODS = new Set(["get", "put", "post", "patch", "delete"]);

test("the API docs page lists every operation, offline, under its own CSP", async () => {
  const paths = (await openapiDocument()).paths as Record<string, Record<string, unknown>>;
  const operations = Object.entries(paths).flatMap(([path, item]) =>
    Object.keys(item).filter((method) => METHODS.has(method)).map((m) => `${m} ${path}`));
  const browser = await launchChromium();
  try {
    const offsite: string[] = [];
    const origin = new URL(apiUrl()).origin;
    await browser.context.route("**/*", (route) => {
      if (new URL(route.request().url()).origin === origin) return route.continue();
      offsite.push(route.request().url());
      return route.abort("internetdisconnected");
    });
    const page = await browser.context.newPage();
    const problems: string[] = [];
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(message.text());
    });
    page.on("pageerror", (error) => problems.push(error.message));
    const response = await page.goto(`${apiUrl()}/api/docs`);
    assert.match(response?.headers()["content-security-policy"] ?? "", /script-src 'self'/);
    await page.locator(".opblock").nth(operations.length - 1).waitFor({ timeout: 20_000 });
    const listed = await page.locator(".opblock").evaluateAll((blocks) => blocks.map((block) =>
      `${block.querySelector(".opblock-summary-method")?.textContent?.toLowerCase()} `
      + `${block.querySelector(".opblock-summary-path")?.getAttribute("data-path")}`));
    assert.deepEqual([...listed].sort(), [...operations].sort());
    await page.screenshot({ path: browser.screenshotPath("api-docs"), fullPage: false });
    assert.deepEqual(offsite, [], "the page reached for another origin");
    assert.deepEqual(problems, [], "errors in the page (a CSP refusal would be one)");
  } finally {
    await browser.close();
  }
});
