// History and recovery against the real gateway binary and a real
// redis-server (both on free ports): messages recorded with
// `FCALL topicgate_publish` reach the handler exactly once and in offset
// order through repeated forced drops (the client's socket killed, the
// gateway restarted) while a publisher never pauses; `gap` when the
// history no longer holds what was missed; `ctx.offset`/`ctx.epoch` are
// the frames' own.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import WebSocket from 'ws';
import { TopicgateClient } from '../dist/index.mjs';
import { Queue, deferred, nextEvent, record, within } from './support/queue.mjs';
import { RedisServer, signToken } from './support/processes.mjs';
import { realParts } from './support/suite.mjs';

const ACL = `[acl]
default = "deny"
[[acl.rules]]
topics = ["chat-*"]
effect = "allow"
`;

const parts = realParts();
const { cleanups } = parts;

/** A gateway on the shared Redis with `[history] size = size`. */
function gateway(size, on = parts.redis) {
  return parts.gateway(on, `${ACL}[history]\nsize = ${size}\nttl_secs = 300\n`);
}

/**
 * A WebSocket class that keeps every socket it opens and the frames each
 * received, so a test can kill the current one and compare what the
 * handler got with what came over the wire.
 */
function recordingWebSocket() {
  const sockets = [];
  const frames = [];
  class Recording extends WebSocket {
    constructor(url) {
      super(url);
      sockets.push(this);
      this.on('message', (data) => frames.push(JSON.parse(String(data))));
    }
  }
  return { Recording, sockets, frames };
}

function client(url, options) {
  const created = new TopicgateClient(url, {
    WebSocket,
    token: () => signToken({ sub: 'hana' }),
    minReconnectDelayMs: 20,
    maxReconnectDelayMs: 200,
    ...options,
  });
  cleanups.push(() => created.close());
  return created;
}

/** `FCALL topicgate_publish 1 topic payload` on `on`: the recorded offset. */
function fcall(topic, payload, on = parts.redis) {
  return on.command('FCALL', 'topicgate_publish', 1, topic, payload);
}

/**
 * Records `{"n":offset}` on `topic` without pausing until `stop()`, which
 * resolves with the last offset recorded. Each call must get the next
 * offset: nobody else records on the topic.
 */
function publishContinuously(topic) {
  let running = true;
  let last = 0;
  const done = (async () => {
    while (running) {
      const offset = await fcall(topic, JSON.stringify({ n: last + 1 }));
      assert.equal(offset, last + 1, 'FCALL answers consecutive offsets');
      last = offset;
    }
  })();
  return {
    get last() {
      return last;
    },
    async stop() {
      running = false;
      await done;
      return last;
    },
  };
}

/**
 * A handler that checks every recorded delivery is the next offset of one
 * epoch, with the payload recorded under it, and lets a test wait for an
 * offset.
 */
function contiguousReceiver() {
  const seen = [];
  const problems = [];
  const waiters = [];
  const handler = (data, ctx) => {
    const expected = seen.length + 1;
    if (ctx.offset !== expected) problems.push(`offset ${ctx.offset} where ${expected} was due`);
    if (data?.n !== ctx.offset) problems.push(`payload ${JSON.stringify(data)} at offset ${ctx.offset}`);
    if (seen.length > 0 && ctx.epoch !== seen[0].epoch) problems.push(`epoch ${ctx.epoch} after ${seen[0].epoch}`);
    seen.push(ctx);
    for (const waiter of [...waiters]) {
      if (seen.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  const reach = (count, what) => {
    if (seen.length >= count) return Promise.resolve();
    const waiter = { count, ...deferred() };
    waiters.push(waiter);
    return within(waiter.promise, what ?? `offset ${count}`);
  };
  return { handler, seen, problems, reach };
}

test('no loss and no duplicate through repeated forced drops while FCALL publishes continuously', async () => {
  const gw = await gateway(100_000);
  const topic = 'chat-drops';
  const { Recording, sockets, frames } = recordingWebSocket();
  const c = client(gw.url, { WebSocket: Recording });
  const gaps = [];
  await c.connect();
  const receiver = contiguousReceiver();
  const sub = await c.subscribe(topic, receiver.handler);
  sub.on('gap', (info) => gaps.push(info));
  const confirmations = record(sub, 'subscribed');
  const publisher = publishContinuously(topic);

  const DROPS = 6;
  for (let drop = 1; drop <= DROPS; drop++) {
    // Messages flow before each drop, so every drop cuts a live stream.
    await receiver.reach(receiver.seen.length + 20, `deliveries before drop ${drop}`);
    const resubscribed = nextEvent(sub, 'subscribed', `the resubscribe after drop ${drop}`);
    if (drop % 2 === 1) {
      // The network goes: the client's TCP connection dies without a close frame.
      sockets.at(-1).terminate();
    } else {
      // The gateway goes: restarted on the same port while Redis keeps recording.
      await gw.restart();
    }
    const info = await resubscribed;
    assert.equal(info.recovered, true, `drop ${drop}: ${JSON.stringify(info)}`);
  }
  const last = await publisher.stop();
  await receiver.reach(last, `every offset up to ${last}`);

  assert.deepEqual(receiver.problems, []);
  assert.equal(receiver.seen.length, last, 'each recorded message once');
  assert.deepEqual(gaps, []);
  assert.ok(sockets.length > DROPS, 'a new connection after each drop');
  assert.equal(confirmations.length, DROPS);
  assert.ok(
    confirmations.every((info) => info.recovered === true && typeof info.epoch === 'string'),
    JSON.stringify(confirmations),
  );
  // The gateway itself sent each once: what the handler got is exactly the
  // deliveries that came over the wire, offset and epoch included.
  const wire = frames.filter((f) => f.action === 'message').map((f) => [f.offset, f.epoch, f.snapshot]);
  assert.deepEqual(
    receiver.seen.map((ctx, i) => [ctx.offset, ctx.epoch, { n: i + 1 }]),
    wire,
  );
  assert.deepEqual(sub.position, { epoch: receiver.seen[0].epoch, offset: last });
});

test('ctx carries the frame offset and epoch of recorded messages, and none for a plain PUBLISH', async () => {
  const gw = await gateway(100);
  const topic = 'chat-ctx';
  const { Recording, frames } = recordingWebSocket();
  const c = client(gw.url, { WebSocket: Recording });
  await c.connect();
  const received = new Queue();
  await c.subscribe(topic, (data, ctx) => received.push({ data, ctx }));
  assert.equal(await fcall(topic, '{"text":"one"}'), 1);
  await parts.redis.command('PUBLISH', topic, 'plain');
  assert.equal(await fcall(topic, 'two'), 2);

  const got = [await received.next(), await received.next(), await received.next()];
  const wire = frames.filter((f) => f.action === 'message');
  assert.equal(wire.length, 3);
  const epoch = wire[0].epoch;
  assert.equal(typeof epoch, 'string');
  assert.deepEqual(wire, [
    { action: 'message', topic, snapshot: { text: 'one' }, offset: 1, epoch },
    { action: 'message', topic, snapshot: 'plain' },
    { action: 'message', topic, snapshot: 'two', offset: 2, epoch },
  ]);
  assert.deepEqual(got, [
    { data: { text: 'one' }, ctx: { topic, offset: 1, epoch } },
    { data: 'plain', ctx: { topic } },
    { data: 'two', ctx: { topic, offset: 2, epoch } },
  ]);
});

test('gap when the history was trimmed past the position while the client was away', async () => {
  const gw = await gateway(3);
  const topic = 'chat-trimmed';
  const c = client(gw.url);
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe(topic, (data, ctx) => received.push({ data, ctx }));
  assert.equal(await fcall(topic, '1'), 1);
  const first = await received.next();
  const epoch = first.ctx.epoch;
  assert.deepEqual(first, { data: 1, ctx: { topic, offset: 1, epoch } });

  // Away for more than `size` messages: 2..10 are recorded, only 8..10 kept.
  const shutdown = nextEvent(c, 'error', 'the shutdown notice');
  await gw.stop();
  assert.equal((await shutdown).code, 'shutdown');
  for (let n = 2; n <= 10; n++) assert.equal(await fcall(topic, String(n)), n);
  const gap = nextEvent(sub, 'gap', 'the gap');
  const resubscribed = nextEvent(sub, 'subscribed', 'the resubscribe');
  await gw.spawn();
  assert.deepEqual(await resubscribed, { topic, epoch, offset: 10, recovered: false });
  const info = await gap;
  assert.equal(info.topic, topic);
  assert.equal(info.epoch, epoch);
  assert.equal(info.offset, 10);
  assert.match(info.detail, /no longer all in the history/);
  assert.deepEqual(sub.position, { epoch, offset: 10 });

  // Nothing of the lost range is replayed; delivery goes on live.
  assert.equal(await fcall(topic, '11'), 11);
  assert.deepEqual(await received.next(), { data: 11, ctx: { topic, offset: 11, epoch } });
  assert.equal(received.length, 0);
});

test('gap from the gateway when Redis loses the history, then delivery in the new epoch', async () => {
  const own = await RedisServer.start();
  cleanups.push(() => own.stop());
  const gw = await gateway(100, own);
  const topic = 'chat-reset';
  const c = client(gw.url);
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe(topic, (data, ctx) => received.push({ data, ctx }));
  const gaps = record(sub, 'gap');
  assert.equal(await fcall(topic, '"before"', own), 1);
  const before = await received.next();
  const old = before.ctx.epoch;

  // Redis restarts empty: the gateway's link comes back to a topic whose
  // history is gone, and its next recorded message starts a new epoch.
  await own.stop();
  await gw.readyz(503);
  await own.spawn();
  await gw.ready();
  const gap = nextEvent(sub, 'gap', 'the gap frame');
  assert.equal(await fcall(topic, '"after"', own), 1);
  const info = await gap;
  assert.notEqual(info.epoch, old);
  assert.equal(info.offset, 0);
  assert.deepEqual(await received.next(), { data: 'after', ctx: { topic, offset: 1, epoch: info.epoch } });
  assert.equal(gaps.length, 1, JSON.stringify(gaps));
  assert.equal(c.state, 'connected', 'the gap came over the same connection');
});

test('a subscription made before the topic had any history misses nothing recorded while away', async () => {
  const gw = await gateway(100);
  const topic = 'chat-quiet';
  const c = client(gw.url);
  await c.connect();
  const receiver = contiguousReceiver();
  const sub = await c.subscribe(topic, receiver.handler);
  const gaps = record(sub, 'gap');
  const confirmations = record(sub, 'subscribed');
  assert.equal(sub.position, undefined, 'no history yet');

  // The topic's history begins while the client is away.
  const resubscribed = nextEvent(sub, 'subscribed', 'the resubscribe');
  await gw.stop();
  for (let n = 1; n <= 3; n++) assert.equal(await fcall(topic, JSON.stringify({ n })), n);
  await gw.spawn();
  const info = await resubscribed;
  assert.equal(info.recovered, true, JSON.stringify(info));
  assert.equal(await fcall(topic, JSON.stringify({ n: 4 })), 4);
  await receiver.reach(4, 'offsets 1..4');
  assert.deepEqual(receiver.problems, []);
  assert.deepEqual(gaps, []);
  assert.equal(confirmations.length, 1, 'one confirmation per resubscribe');
  assert.deepEqual(sub.position, { epoch: receiver.seen[0].epoch, offset: 4 });
});

test('a subscription made before the topic had any history gets gap when what it missed is trimmed', async () => {
  const gw = await gateway(3);
  const topic = 'chat-quiet-trimmed';
  const c = client(gw.url);
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe(topic, (data, ctx) => received.push({ data, ctx }));
  const gap = nextEvent(sub, 'gap', 'the gap');
  await gw.stop();
  for (let n = 1; n <= 5; n++) assert.equal(await fcall(topic, String(n)), n);
  await gw.spawn();
  const info = await gap;
  assert.equal(info.offset, 5, JSON.stringify(info));
  assert.equal(await fcall(topic, '6'), 6);
  assert.deepEqual(await received.next(), { data: 6, ctx: { topic, offset: 6, epoch: info.epoch } });
  assert.equal(received.length, 0, 'nothing of the trimmed run is delivered');
});
