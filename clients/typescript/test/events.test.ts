// jobs.events: the live stream over fetch, cut in the middle by a proxy that drops every
// connection, resumed with Last-Event-ID: the same events as an uncut stream, none twice.
import assert from "node:assert/strict";
import { type Server, type Socket, connect, createServer } from "node:net";
import { test } from "node:test";

import { type Chapter, type JobEvent, LifeTalesError, createClient } from "../src/index.js";
import { apiUrl, signedUpClient, spaceWithMoments } from "./helpers.js";

/** A TCP proxy to the platform that remembers each request's head and can drop every
 * connection at once, as a flaky network or a restarted load balancer would. */
class DroppingProxy {
  readonly heads: string[] = [];
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;

  async start(target: URL): Promise<string> {
    this.server = createServer((client) => {
      const upstream = connect(Number(target.port), target.hostname);
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on("close", () => this.sockets.delete(socket));
        socket.on("error", () => undefined); // a dropped peer: closed above
      }
      client.once("data", (chunk) => this.heads.push(chunk.toString("latin1").split("\r\n\r\n")[0] ?? ""));
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((done) => this.server?.listen(0, "127.0.0.1", done));
    const address = this.server.address();
    return `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`;
  }

  dropAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  stop(): Promise<void> {
    this.dropAll();
    return new Promise((done) => this.server?.close(() => done()));
  }
}

test("events: a dropped stream resumes with Last-Event-ID, same events, none twice", async () => {
  const owner = await signedUpClient();
  const proxy = new DroppingProxy();
  const viaProxy = createClient({ baseUrl: await proxy.start(new URL(apiUrl())) });
  try {
    // The same user, through the proxy.
    const token = (await owner.auth.login({ email: (await owner.auth.me()).email,
      password: "a long enough password" })).accessToken;
    viaProxy.setToken(token);
    const { spaceId } = await spaceWithMoments(owner, 3);
    const job = await owner.stories.generate(spaceId);

    const received: JobEvent[] = [];
    const connectionOf = new Map<number, number>(); // event id -> which stream carried it
    const streams = (): string[] => proxy.heads.filter((head) => head.includes("/events"));
    let dropped = false;
    const done = await viaProxy.jobs.events(job.id, {
      onEvent: (event) => {
        received.push(event);
        connectionOf.set(event.id, streams().length);
        if (event.type === "chapter" && !dropped) {
          dropped = true;
          proxy.dropAll(); // mid-story: two chapters are still to be written
        }
      },
    });
    assert.equal(done?.type, "done");
    assert.equal((done?.data as { status: string }).status, "succeeded");
    assert.equal(streams().length, 2, streams().join("\n---\n"));
    assert.doesNotMatch(streams()[0] ?? "", /last-event-id/i);
    // The second stream resumed after the last event the first one delivered.
    const lastOfFirst = received.filter((e) => connectionOf.get(e.id) === 1).at(-1)?.id;
    assert.match(streams()[1] ?? "", new RegExp(`\r\nLast-Event-ID: ${lastOfFirst}\r\n`, "i"));
    assert.ok(received.some((e) => connectionOf.get(e.id) === 2 && e.type === "chapter"));

    // An uncut stream of the finished job, from the start, holds exactly the same events.
    const whole: JobEvent[] = [];
    await owner.jobs.events(job.id, { onEvent: (event) => whole.push(event) });
    assert.deepEqual(received, whole);
    assert.equal(new Set(received.map((e) => e.id)).size, received.length);
    const chapters = received.filter((e) => e.type === "chapter").map((e) => e.data as Chapter);
    assert.deepEqual(chapters.map((c) => c.position), [0, 1, 2]);
    assert.ok(received.some((e) => e.type === "illustration"));
  } finally {
    await proxy.stop();
  }
});

test("events: lastEventId resumes after it; past the end there is nothing more", async () => {
  const client = await signedUpClient();
  const { spaceId } = await spaceWithMoments(client, 1);
  const job = await client.stories.generate(spaceId, {}, { wait: 20 });
  const all: JobEvent[] = [];
  const done = await client.jobs.events(job.id, { onEvent: (e) => all.push(e) });
  const middle = all[2]?.id ?? 0;
  const rest: JobEvent[] = [];
  await client.jobs.events(job.id, { lastEventId: middle, onEvent: (e) => rest.push(e) });
  assert.deepEqual(rest, all.filter((e) => e.id > middle));
  assert.equal(await client.jobs.events(job.id, { lastEventId: done?.id }), undefined);
});

test("events: an unknown job is a 404, not a reconnect loop", async () => {
  const client = await signedUpClient();
  await assert.rejects(client.jobs.events("00000000-0000-4000-8000-000000000000"),
    (error: unknown) => error instanceof LifeTalesError && error.code === 404);
});

test("events: aborting the signal stops the stream", async () => {
  const client = await signedUpClient();
  const { spaceId } = await spaceWithMoments(client, 3);
  const job = await client.stories.generate(spaceId);
  const controller = new AbortController();
  const types: string[] = [];
  await assert.rejects(client.jobs.events(job.id, {
    signal: controller.signal,
    onEvent: (event) => {
      types.push(event.type);
      if (event.type === "chapter") controller.abort();
    },
  }), (error: unknown) => error instanceof DOMException && error.name === "AbortError");
  assert.equal(types.at(-1), "chapter");
  await client.jobs.wait(job); // the job itself goes on: watching is not owning
});
