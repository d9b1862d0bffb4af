// What a failed call throws: LifeTalesError with the API's {code, status, message, errors},
// code 0 when nothing answered; the caller's own abort as it is.
import assert from "node:assert/strict";
import { test } from "node:test";

import { LifeTalesError, createClient } from "../src/index.js";
import { apiUrl, signedUpClient } from "./helpers.js";
import { freePort } from "./platform.js";

function refusedWith(code: number, check: (error: LifeTalesError) => void = () => undefined) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof LifeTalesError, String(error));
    assert.equal(error.name, "LifeTalesError");
    assert.equal(error.code, code);
    check(error);
    return true;
  };
}

test("401 without a token, 404 for someone else's space", async () => {
  const anonymous = createClient({ baseUrl: apiUrl() });
  await assert.rejects(anonymous.spaces.list(), refusedWith(401, (error) => {
    assert.equal(error.status, "Unauthorized");
    assert.ok(error.message.length > 0);
    assert.equal(error.transient, false);
  }));
  const alice = await signedUpClient();
  const bob = await signedUpClient();
  const space = await alice.spaces.create({ title: "Alice's" });
  await assert.rejects(bob.spaces.get(space.id), refusedWith(404, (error) => {
    assert.equal(error.status, "Not Found");
  }));
});

test("422 names the fields in errors, and message says what is wrong", async () => {
  const client = await signedUpClient();
  await assert.rejects(client.spaces.create({ title: "" }), refusedWith(422, (error) => {
    assert.equal(error.status, "Unprocessable Entity");
    assert.match(error.message, /title/);
    assert.deepEqual(Object.keys(error.errors ?? {}), ["json"]);
  }));
  const settings = { ...(await client.settings.get()), creativity: 7 };
  await assert.rejects(client.settings.update(settings), refusedWith(422, (error) => {
    assert.match(JSON.stringify(error.errors), /creativity/);
  }));
  const space = await client.spaces.create({ title: "Empty" });
  await assert.rejects(client.stories.generate(space.id), refusedWith(422, (error) => {
    assert.match(error.message, /no moments/);
  }));
});

test("409 from a conflicting request", async () => {
  const client = await signedUpClient();
  const space = await client.spaces.create({ title: "No story yet" });
  await assert.rejects(client.stories.retryIllustrations(space.id), refusedWith(409));
});

test("code 0 when nothing answers: network error and timeout", async () => {
  const closed = createClient({ baseUrl: `http://127.0.0.1:${await freePort()}` });
  await assert.rejects(closed.spaces.list(), refusedWith(0, (error) => {
    assert.equal(error.status, "Network Error");
    assert.equal(error.transient, true);
    assert.ok(error.cause);
  }));
  const impatient = createClient({ baseUrl: apiUrl(), timeoutMs: 1 });
  await assert.rejects(impatient.auth.register({ email: "slow@example.com",
    password: "a long enough password" }), refusedWith(0, (error) => {
    assert.equal(error.status, "Timeout");
  }));
});

test("the caller's abort is not wrapped", async () => {
  const client = await signedUpClient();
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(client.stories.generate("x", {}, { signal: controller.signal }),
    (error: unknown) => error instanceof DOMException && error.name === "AbortError");
});
