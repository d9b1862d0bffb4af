// `npm test`: starts the platform the way `make run` does (offline provider, embedded SQLite
// and broker, throwaway state under a temporary LIFETALES_VAR_DIR, a free port), runs every
// client and browser test file against it with Node's test runner, then stops it.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

import { PACKAGE_DIR } from "../scripts/types.js";
import { TEST_PLATFORM_ENV, freePort, startPlatform } from "./platform.js";

// `npm test -- jobs events` runs only the files whose names contain one of the words.
const only = process.argv.slice(2);
const build = resolve(PACKAGE_DIR, ".build");
const files = [join(build, "test"), join(build, "demo")].flatMap((dir) =>
  readdirSync(dir).filter((name) => name.endsWith(".test.js")).sort().map((name) => join(dir, name)))
  .filter((file) => only.length === 0 || only.some((word) => file.includes(word)));

const varDir = mkdtempSync(join(tmpdir(), "lifetales-client-"));
const pagePort = await freePort();
const platform = await startPlatform(varDir, { pageOrigin: `http://127.0.0.1:${pagePort}` });
let code = 1;
try {
  code = await new Promise<number>((done) => {
    // One file at a time: they share the platform's two worker threads.
    const child = spawn(process.execPath, ["--test", "--test-concurrency=1", ...files], {
      stdio: "inherit",
      env: {
        ...platform.env,
        [TEST_PLATFORM_ENV.api]: platform.baseUrl,
        [TEST_PLATFORM_ENV.pagePort]: String(pagePort),
      },
    });
    child.on("exit", (status) => done(status ?? 1));
  });
} finally {
  await platform.stop();
  if (code !== 0) console.error(`platform log (last lines):\n${platform.logTail(60)}`);
  rmSync(varDir, { recursive: true, force: true });
}
process.exit(code);
