// What the client tests share: where the platform is, a signed-up client, a fetch that records
// the exchanges, a real audio file, and the OpenAPI document to hold answers to.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { type ClientOptions, type LifeTalesClient, createClient } from "../src/index.js";
import { TEST_PLATFORM_ENV } from "./platform.js";

export function apiUrl(): string {
  const url = process.env[TEST_PLATFORM_ENV.api];
  if (!url) throw new Error(`${TEST_PLATFORM_ENV.api} is unset: run the tests with npm test`);
  return url;
}

export function unique(prefix: string): string {
  return `${prefix} ${randomUUID().slice(0, 8)}`;
}

/** A client signed in as a new user. */
export async function signedUpClient(options: Partial<ClientOptions> = {}
): Promise<LifeTalesClient> {
  const client = createClient({ baseUrl: apiUrl(), ...options });
  await client.auth.register({
    email: `${randomUUID().slice(0, 12)}@example.com`, password: "a long enough password",
  });
  return client;
}

export interface Exchange {
  method: string;
  path: string;
  requestHeaders: Headers;
  status: number; // 0: no answer
  headers: Headers;
  sentAt: number;
}

/** A fetch that forwards to the real one and records each exchange. */
export function recordingFetch(): { fetch: typeof fetch; exchanges: Exchange[] } {
  const exchanges: Exchange[] = [];
  const recorded: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const exchange: Exchange = {
      method: init?.method ?? "GET", path: url.pathname,
      requestHeaders: new Headers(init?.headers), status: 0, headers: new Headers(),
      sentAt: performance.now(),
    };
    exchanges.push(exchange);
    const response = await fetch(input, init);
    exchange.status = response.status;
    exchange.headers = response.headers;
    return response;
  };
  return { fetch: recorded, exchanges };
}

/** A second of a 440 Hz tone as 16-bit mono PCM WAV: real audio the API's sniffing accepts. */
export function wavTone(seconds = 1, rate = 8000): Uint8Array<ArrayBuffer> {
  const samples = Math.round(seconds * rate);
  const view = new DataView(new ArrayBuffer(44 + samples * 2));
  const text = (offset: number, value: string): void =>
    [...value].forEach((char, i) => view.setUint8(offset + i, char.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + samples * 2, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * 2, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, samples * 2, true);
  for (let i = 0; i < samples; i += 1) {
    view.setInt16(44 + i * 2, Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / rate)), true);
  }
  return new Uint8Array(view.buffer);
}

let document: Promise<Record<string, unknown>> | undefined;

export function openapiDocument(): Promise<Record<string, unknown>> {
  document ??= fetch(`${apiUrl()}/api/openapi.json`, { signal: AbortSignal.timeout(10_000) })
    .then((response) => response.json() as Promise<Record<string, unknown>>);
  return document;
}

/** The answer carries every property its schema documents: what lets the client type
 * answers with every field present. */
export async function assertEveryField(value: unknown, schema: string): Promise<void> {
  const schemas = ((await openapiDocument()).components as { schemas: Record<string, {
    properties: Record<string, unknown>;
  }> }).schemas;
  const documented = Object.keys(schemas[schema]?.properties ?? {});
  assert.ok(documented.length > 0, `no schema ${schema}`);
  assert.equal(typeof value, "object");
  const missing = documented.filter((name) => !(name in (value as object)));
  assert.deepEqual(missing, [], `${schema} answer lacks ${missing.join(", ")}`);
}

/** Three moments a second apart, with words no earlier test used (so no cached story). */
export async function spaceWithMoments(client: LifeTalesClient, count = 3
): Promise<{ spaceId: string; noteIds: string[] }> {
  const space = await client.spaces.create({ title: unique("Porto") });
  const noteIds: string[] = [];
  for (let i = 0; i < count; i += 1) {
    const note = await client.notes.create(space.id, {
      title: unique(`Moment ${i + 1}`), textContent: unique("By the river"),
      timestamp: 1_700_000_000_000 + i * 60_000,
    });
    noteIds.push(note.id);
  }
  return { spaceId: space.id, noteIds };
}
