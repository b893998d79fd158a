// The client against the real gateway binary and a real redis-server, both
// started on free ports by the test.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { describe, test } from 'node:test';
import WebSocket from 'ws';
import { TopicgateClient, TopicgateError } from '../dist/index.mjs';
import { Queue, deferred, nextEvent, record, within } from './support/queue.mjs';
import { RedisServer, signToken } from './support/processes.mjs';
import { realParts } from './support/suite.mjs';

const ACL = `[acl]
default = "deny"
[[acl.rules]]
topics = ["chat-*", "news-*"]
effect = "allow"
`;

/** A WebSocket class that counts the connections a client opens. */
function countingWebSocket() {
  const opened = [];
  class Counting extends WebSocket {
    constructor(url) {
      super(url);
      opened.push(performance.now());
    }
  }
  return { Counting, opened };
}

const parts = realParts();
const { cleanups } = parts;

function gateway(toml = ACL, on = parts.redis, auth = '') {
  return parts.gateway(on, toml, auth);
}

function client(url, options) {
  const created = new TopicgateClient(url, { WebSocket, minReconnectDelayMs: 20, maxReconnectDelayMs: 200, ...options });
  cleanups.push(() => created.close());
  return created;
}

test('connects, authorizes, subscribes and receives what Redis publishes', async () => {
  const gw = await gateway();
  const c = client(gw.url, { token: async () => signToken({ sub: 'alice' }) });
  const states = record(c, 'state');
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe('chat-room', (data, ctx) => received.push({ data, ctx }));
  assert.equal(sub.topic, 'chat-room');
  assert.equal(sub.state, 'subscribed');
  assert.equal(await parts.redis.command('PUBLISH', 'chat-room', '{"info":"Hello from Redis"}'), 1);
  await parts.redis.command('PUBLISH', 'chat-room', 'not json');
  assert.deepEqual(await received.next(), { data: { info: 'Hello from Redis' }, ctx: { topic: 'chat-room' } });
  assert.deepEqual(await received.next(), { data: 'not json', ctx: { topic: 'chat-room' } });
  await sub.unsubscribe();
  assert.equal(await parts.redis.command('PUBLISH', 'chat-room', 'after'), 0, 'the gateway left the channel');
  assert.deepEqual(states, ['connecting', 'connected']);
});

describe('errors carry the gateway code', () => {
  test('forbidden, bad_request and limit_exceeded reject subscribe', async () => {
    const gw = await gateway(`${ACL}[limits]\nmax_subscriptions = 2\n`);
    const c = client(gw.url, { token: signToken({ sub: 'bob' }) });
    await c.connect();
    const forbidden = await c.subscribe('admin-room', () => {}).catch((e) => e);
    assert.ok(forbidden instanceof TopicgateError);
    assert.equal(forbidden.code, 'forbidden');
    assert.match(forbidden.detail, /admin-room/);
    await assert.rejects(c.subscribe('chat-\u0001', () => {}), { code: 'bad_request' });
    await c.subscribe('chat-1', () => {});
    await c.subscribe('chat-2', () => {});
    await assert.rejects(c.subscribe('chat-3', () => {}), { code: 'limit_exceeded' });
  });

  test('invalid_token rejects connect and is emitted', async () => {
    const gw = await gateway();
    const c = client(gw.url, { token: 'not-a-token', minReconnectDelayMs: 1000, maxReconnectDelayMs: 1000 });
    const error = nextEvent(c, 'error');
    await assert.rejects(c.connect(), { code: 'invalid_token' });
    assert.equal((await error).code, 'invalid_token');
  });

  test('unavailable while Redis is down', async () => {
    const own = await RedisServer.start();
    cleanups.push(() => own.stop());
    const gw = await gateway(ACL, own);
    const c = client(gw.url, { token: signToken({ sub: 'carol' }) });
    await c.connect();
    await own.stop();
    await gw.readyz(503);
    await assert.rejects(c.subscribe('chat-down', () => {}), { code: 'unavailable' });
  });
});

test('an expired token is refreshed on the same connection and the subscription resumes', async () => {
  const gw = await gateway();
  const { Counting, opened } = countingWebSocket();
  const refreshed = deferred();
  let calls = 0;
  const token = async () => {
    calls += 1;
    if (calls === 2) refreshed.resolve();
    // The first token outlives the subscribe by a second or two; the next ones by an hour.
    const exp = Math.floor(Date.now() / 1000) + (calls === 1 ? 2 : 3600);
    return signToken({ sub: 'dave', exp });
  };
  const c = client(gw.url, { token, WebSocket: Counting });
  const states = record(c, 'state');
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe('chat-expiry', (data) => received.push(data));
  const revoked = record(sub, 'revoked');
  const resubscribed = nextEvent(sub, 'subscribed', 'the resubscribe after the refresh');
  await within(refreshed.promise, 'the token function to be asked again on expiry');
  await resubscribed;
  await parts.redis.command('PUBLISH', 'chat-expiry', '"after the refresh"');
  assert.equal(await received.next(), 'after the refresh');
  assert.equal(opened.length, 1, 'no reconnect');
  assert.deepEqual(states, ['connecting', 'connected']);
  assert.deepEqual(revoked, []);
  assert.equal(calls, 2);
});

test('after the gateway restarts the client reconnects, re-authorizes and resubscribes', async () => {
  const gw = await gateway();
  let calls = 0;
  const c = client(gw.url, { token: () => (calls++, signToken({ sub: 'erin' })) });
  await c.connect();
  const received = new Queue();
  const sub = await c.subscribe('news-restart', (data) => received.push(data));
  const shutdown = nextEvent(c, 'error', 'the shutdown notice');
  const resubscribed = nextEvent(sub, 'subscribed', 'the resubscribe after the restart');
  await gw.stop();
  assert.equal((await shutdown).code, 'shutdown');
  await gw.spawn();
  await resubscribed;
  await parts.redis.command('PUBLISH', 'news-restart', '{"n":2}');
  assert.deepEqual(await received.next(), { n: 2 });
  assert.equal(calls, 2, 'the token function is asked again');
  assert.equal(c.state, 'connected');
});

test('close 1008 after an auth timeout backs off and asks the token again', async () => {
  const gw = await gateway(ACL, parts.redis, 'timeout_secs = 1\n');
  const minReconnectDelayMs = 100;
  const { Counting, opened } = countingWebSocket();
  const firstCallAnswered = deferred();
  let calls = 0;
  // The first token never comes in time: the gateway's auth deadline closes
  // the connection with 1008. The second call answers at once.
  const token = () => {
    calls += 1;
    return calls === 1 ? firstCallAnswered.promise : signToken({ sub: 'frank' });
  };
  const c = client(gw.url, { token, WebSocket: Counting, minReconnectDelayMs, maxReconnectDelayMs: 200 });
  const errors = record(c, 'error');
  const timedOut = nextEvent(c, 'error', 'the auth timeout');
  const connected = c.connect();
  assert.equal((await timedOut).code, 'auth_timeout');
  const closedAt = performance.now();
  await connected;
  // The stale answer to the first call is ignored.
  firstCallAnswered.resolve(signToken({ sub: 'frank' }));
  await c.subscribe('chat-after-1008', () => {});
  assert.equal(opened.length, 2);
  assert.equal(calls, 2);
  assert.ok(opened[1] - closedAt >= minReconnectDelayMs - 1, `reconnected ${opened[1] - closedAt} ms after the close`);
  assert.deepEqual(errors.map((e) => e.code), ['auth_timeout']);
});

test('a config reload that removes a topic from the ACL revokes its subscription', async () => {
  const gw = await gateway();
  const c = client(gw.url, { token: signToken({ sub: 'gina' }) });
  await c.connect();
  const news = await c.subscribe('news-1', () => {});
  const chat = new Queue();
  await c.subscribe('chat-1', (data) => chat.push(data));
  const revoked = nextEvent(news, 'revoked', 'the revocation');
  gw.writeConfig(ACL.replace('"chat-*", "news-*"', '"chat-*"'));
  assert.match(await revoked, /acl/);
  assert.equal(news.state, 'unsubscribed');
  assert.equal(await parts.redis.command('PUBLISH', 'news-1', 'gone'), 0);
  await parts.redis.command('PUBLISH', 'chat-1', '"still here"');
  assert.equal(await chat.next(), 'still here');
});

describe('history and recovery against the real gateway', () => {
  /** `FCALL topicgate_publish` of `{n}` on `topic`, as a backend records. */
  const fcall = (topic, n) => parts.redis.command('FCALL', 'topicgate_publish', '1', topic, JSON.stringify({ n }));

  /** A WebSocket class that keeps every socket it opens, to cut them. */
  function trackedWebSocket() {
    const sockets = [];
    class Tracked extends WebSocket {
      constructor(url) {
        super(url);
        sockets.push(this);
      }
    }
    return { Tracked, sockets };
  }

  test('zero loss and zero duplicates through repeated forced drops while Redis records continuously', async () => {
    // A history deep enough for the whole run: a reconnect never falls out of it.
    const gw = await gateway(`${ACL}[history]\nsize = 1000\n`);
    const { Tracked, sockets } = trackedWebSocket();
    const c = client(gw.url, { token: signToken({ sub: 'ivan' }), WebSocket: Tracked });
    await c.connect();
    const topic = 'chat-drops-real';
    const total = 200;
    assert.equal(await fcall(topic, 1), 1);
    const received = [];
    let reached = deferred();
    let awaited = 0;
    const sub = await c.subscribe(topic, (data, ctx) => {
      assert.equal(ctx.offset, data.n);
      received.push(data.n);
      if (data.n >= awaited) reached.resolve();
    });
    const gaps = [];
    sub.on('gap', (gap) => gaps.push(gap));
    for (let n = 2; n <= total; n++) {
      assert.equal(await fcall(topic, n), n);
      // Every 40 messages, once the client has them, its connection is cut
      // without a close frame while the publishing goes on.
      if (n % 40 === 0 && n < total) {
        await within(reached.promise, `message ${awaited}`);
        sockets.at(-1).terminate();
      }
      if (n % 40 === 39) {
        reached = deferred();
        awaited = n + 1;
      }
    }
    awaited = total;
    reached = deferred();
    if (received.at(-1) !== total) await within(reached.promise, `all ${total} messages`);
    assert.equal(sockets.length, total / 40, 'one connection per drop, plus the first');
    assert.deepEqual(received, Array.from({ length: total - 1 }, (_, i) => i + 2), 'offsets 2..total, once each, in order');
    assert.deepEqual(gaps, []);
    assert.equal(sub.position.offset, total);
  });

  test('gap when the missed messages were trimmed from the history', async () => {
    const gw = await gateway(`${ACL}[history]\nsize = 3\n`);
    const { Tracked, sockets } = trackedWebSocket();
    const reconnect = deferred();
    let calls = 0;
    // The reconnect waits for its token until more than `size` messages are recorded.
    const token = async () => {
      calls += 1;
      if (calls > 1) await reconnect.promise;
      return signToken({ sub: 'judy' });
    };
    const c = client(gw.url, { token, WebSocket: Tracked });
    await c.connect();
    const topic = 'chat-trimmed';
    assert.equal(await fcall(topic, 1), 1);
    const received = new Queue();
    const sub = await c.subscribe(topic, (data) => received.push(data.n));
    assert.equal(await fcall(topic, 2), 2);
    assert.equal(await received.next(), 2);
    const gap = nextEvent(sub, 'gap', 'the gap after trimming');
    sockets.at(-1).terminate();
    for (let n = 3; n <= 10; n++) await fcall(topic, n);
    reconnect.resolve();
    const info = await gap;
    assert.equal(info.offset, 10, 'delivery goes on after the history\'s last offset');
    assert.equal(await fcall(topic, 11), 11);
    assert.equal(await received.next(), 11, 'nothing replayed, then live');
  });
});
