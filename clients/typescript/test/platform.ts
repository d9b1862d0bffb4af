// The live platform the tests talk to: `lifetales run` (what `make run` starts) in a child
// process group, on a free port, with its state under a throwaway directory.
import { type ChildProcess, spawn } from "node:child_process";
import { openSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join, resolve } from "node:path";

import { PACKAGE_DIR } from "../scripts/types.js";

/** How the runner tells each test file where the platform and the demo page are. */
export const TEST_PLATFORM_ENV = {
  api: "LIFETALES_TEST_API",
  pagePort: "LIFETALES_TEST_PAGE_PORT",
} as const;

// Settings of the platform under test, each for a reason:
export const PLATFORM_SETTINGS = {
  // Chapters arrive a second apart, as a model writes them: a page can show one before the end.
  OFFLINE_CHAPTER_DELAY_MS: "1000",
  // Low enough that a test reaches it (429 + Retry-After), high enough for a poll a second.
  RATE_LIMIT_POLLING: "20 per 5 seconds",
  // Every test signs up a user of its own from the same address.
  RATE_LIMIT_AUTH: "500/minute",
  RATE_LIMIT_STORIES: "100/hour",
  WORKER_METRICS_PORT: "0", // several platforms may run on one machine
};
// Two worker threads: a test can keep both busy and watch a third job wait in the queue.
export const WORKER_CONCURRENCY = 2;
// Configuration from the outer environment that would point the platform elsewhere.
const INHERITED_NOT = ["DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "GEMINI_API_KEY",
  "GOOGLE_GEMINI_BASE_URL", "CLOUDINARY_URL", "SECRET_KEY", "JWT_SECRET", "MEDIA_DIR",
  "CORS_ORIGINS", "PUBLIC_BASE_URL", "PORT", "WEB_CONCURRENCY"];

export interface Platform {
  baseUrl: string;
  /** The environment the platform runs with (its CLI, run with it, reaches the same state). */
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
  logTail(lines: number): string;
}

export function lifetalesBin(): string {
  return process.env.LIFETALES_BIN ?? resolve(PACKAGE_DIR, "../../.venv/bin/lifetales");
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => done(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export async function startPlatform(varDir: string, options: { pageOrigin: string }
): Promise<Platform> {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of INHERITED_NOT) delete env[name];
  Object.assign(env, PLATFORM_SETTINGS, {
    LIFETALES_VAR_DIR: varDir,
    PUBLIC_BASE_URL: baseUrl,
    CORS_ORIGINS: options.pageOrigin,
  });
  const logPath = join(varDir, "platform.log");
  const log = openSync(logPath, "a");
  const child = spawn(lifetalesBin(), ["run", "--port", String(port), "--concurrency",
    String(WORKER_CONCURRENCY)], {
    env, stdio: ["ignore", log, log], detached: true, cwd: resolve(PACKAGE_DIR, "../.."),
  });
  const logTail = (lines: number): string => {
    try {
      return readFileSync(logPath, "utf8").split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  };
  const platform = { baseUrl, env, stop: () => stop(child), logTail };
  try {
    await ready(baseUrl, child, logPath);
  } catch (error) {
    await platform.stop();
    throw new Error(`${String(error)}\n${logTail(40)}`);
  }
  return platform;
}

// The workers `lifetales run` starts, by Celery hostname: the I/O queues, batches, film renders.
const WORKERS = ["celery", "batch", "render"];

/** The API answers /ready and every worker said "<name>@host ready.". */
async function ready(baseUrl: string, child: ChildProcess, logPath: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`lifetales run exited (${child.exitCode})`);
    const log = readFileSync(logPath, "utf8");
    const workers = WORKERS.every((name) => new RegExp(`"${name}@\\S+ ready\\.`).test(log));
    const api = await fetch(`${baseUrl}/ready`, { signal: AbortSignal.timeout(2000) })
      .then((response) => response.status === 200, () => false);
    if (api && workers) return;
    await new Promise((done) => setTimeout(done, 300));
  }
  throw new Error("the platform was not ready within 120 s");
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.pid === undefined) return;
  const exited = new Promise((done) => child.once("exit", done));
  process.kill(-child.pid, "SIGTERM");
  const timer = setTimeout(() => child.pid && process.kill(-child.pid, "SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
}
