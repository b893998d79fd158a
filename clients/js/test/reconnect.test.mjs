// Connection handling against a scripted gateway: backoff, refused tokens,
// the close codes of docs/PROTOCOL.md, close().
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { afterEach, beforeEach, test } from 'node:test';
import { TopicgateClient, TopicgateError, backoffDelay } from '../dist/index.mjs';
import { nextEvent, record } from './support/queue.mjs';
import { ScriptedGateway, WebSocket } from './support/scripted.mjs';

let gateway;
let client;

beforeEach(async () => {
  gateway = await ScriptedGateway.start();
});

afterEach(async () => {
  client?.close();
  await gateway.stop();
});

test('backoff grows from the floor to the cap with full jitter', () => {
  assert.equal(backoffDelay(0, 250, 10_000, () => 0), 250);
  assert.equal(backoffDelay(0, 250, 10_000, () => 1), 500);
  assert.equal(backoffDelay(3, 250, 10_000, () => 1), 4000);
  assert.equal(backoffDelay(3, 250, 10_000, () => 0.5), 2125);
  assert.equal(backoffDelay(10, 250, 10_000, () => 1), 10_000);
  assert.equal(backoffDelay(10_000, 250, 10_000, () => 1), 10_000, 'no overflow');
  assert.equal(backoffDelay(10_000, 250, 10_000, () => 0), 250, 'never below the floor');
  assert.equal(backoffDelay(2, 500, 100, () => 1), 500, 'a cap below the floor gives the floor');
});

test('a refused token closes the connection, backs off and asks the token again', async () => {
  const minReconnectDelayMs = 30;
  const tokens = ['bad', 'good'];
  client = new TopicgateClient(gateway.url, {
    token: async () => tokens.shift(),
    WebSocket,
    minReconnectDelayMs,
    maxReconnectDelayMs: 60,
  });
  const errors = record(client, 'error');
  const states = record(client, 'state');
  const first = client.connect();
  const conn = await gateway.next();
  const request = await conn.expect('authorization');
  assert.equal(request.context, 'bad');
  conn.send({ action: 'session', message: 'session unauthorized', error: 'invalid_token', detail: 'InvalidSignature', id: request.id });
  await assert.rejects(first, { code: 'invalid_token', detail: 'InvalidSignature' });
  const closedAt = performance.now();
  assert.equal(await conn.closed, 4000, 'the client closes the refused connection itself');

  const retry = client.connect();
  const again = await gateway.next();
  const reopenedAt = performance.now();
  assert.equal(await again.authorize(), 'good');
  await retry;
  // No spin: the next attempt waits at least the floor of the backoff.
  assert.ok(reopenedAt - closedAt >= minReconnectDelayMs - 1, `reconnected after ${reopenedAt - closedAt} ms`);
  assert.equal(gateway.accepted, 2);
  assert.deepEqual(errors.map((e) => e.code), ['invalid_token']);
  assert.ok(errors[0] instanceof TopicgateError);
  assert.deepEqual(states, ['connecting', 'disconnected', 'connecting', 'connected']);
});

test('close 1008 after the auth timeout backs off and asks the token again', async () => {
  let calls = 0;
  client = new TopicgateClient(gateway.url, {
    token: () => `token-${++calls}`,
    WebSocket,
    minReconnectDelayMs: 5,
    maxReconnectDelayMs: 20,
  });
  const error = nextEvent(client, 'error');
  const connected = client.connect();
  const conn = await gateway.next();
  await conn.expect('authorization');
  conn.disconnect('auth_timeout', 1008);
  const reported = await error;
  assert.equal(reported.code, 'auth_timeout');
  const again = await gateway.next();
  assert.equal(await again.authorize(), 'token-2');
  await connected;
  assert.equal(calls, 2);
});

for (const [error, code] of [
  ['slow_consumer', 1013],
  ['shutdown', 1001],
]) {
  test(`close ${code} (${error}) reconnects and resubscribes`, async () => {
    client = new TopicgateClient(gateway.url, { token: 't', WebSocket, minReconnectDelayMs: 5, maxReconnectDelayMs: 20 });
    const connected = client.connect();
    const conn = await gateway.next();
    await conn.authorize();
    await connected;
    const pending = client.subscribe('chat', () => {});
    await conn.confirmSubscribe();
    const sub = await pending;
    const errors = record(client, 'error');
    const disconnected = nextEvent(client, 'state');
    conn.disconnect(error, code);
    assert.equal(await disconnected, 'disconnected');
    const again = await gateway.next();
    await again.authorize();
    const resubscribed = nextEvent(sub, 'subscribed');
    const request = await again.confirmSubscribe();
    assert.equal(request.context, 'chat');
    await resubscribed;
    assert.equal(sub.state, 'subscribed');
    assert.deepEqual(errors.map((e) => e.code), [error]);
  });
}

test('without a token the greeting is enough (bypass mode)', async () => {
  client = new TopicgateClient(gateway.url, { WebSocket });
  const connected = client.connect();
  const conn = await gateway.next();
  await connected;
  const sub = client.subscribe('open', () => {});
  const request = await conn.confirmSubscribe();
  assert.equal(request.context, 'open');
  await sub;
});

test('subscribe before connect waits for the connection', async () => {
  client = new TopicgateClient(gateway.url, { token: 't', WebSocket });
  const sub = client.subscribe('early', () => {});
  client.connect();
  const conn = await gateway.next();
  await conn.authorize();
  await conn.confirmSubscribe();
  assert.equal((await sub).topic, 'early');
  await assert.rejects(client.subscribe('early', () => {}), { code: 'already_subscribed' });
});

test('unsubscribe is confirmed by the gateway', async () => {
  client = new TopicgateClient(gateway.url, { token: 't', WebSocket });
  const connected = client.connect();
  const conn = await gateway.next();
  await conn.authorize();
  await connected;
  const pending = client.subscribe('chat', () => {});
  await conn.confirmSubscribe();
  const sub = await pending;
  const done = sub.unsubscribe();
  const request = await conn.expect('unsubscribe');
  assert.equal(request.context, 'chat');
  conn.send({ action: 'unsubscribe', message: 'context unsubscribed', context: 'chat', id: request.id });
  await done;
  assert.equal(sub.state, 'unsubscribed');
});

test('close() rejects what is pending and stops reconnecting', async () => {
  client = new TopicgateClient(gateway.url, { token: 't', WebSocket, minReconnectDelayMs: 5, maxReconnectDelayMs: 10 });
  const connected = client.connect();
  const conn = await gateway.next();
  await conn.authorize();
  await connected;
  const sub = client.subscribe('chat', () => {});
  await conn.expect('subscribe');
  const states = record(client, 'state');
  client.close();
  await assert.rejects(sub, { code: 'closed' });
  assert.equal(await conn.closed, 1000);
  assert.deepEqual(states, ['closed']);
  assert.equal(client.state, 'closed');
});

test('a token function that fails is reported and asked again after a backoff', async () => {
  let calls = 0;
  client = new TopicgateClient(gateway.url, {
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error('auth backend down');
      return 'fresh';
    },
    WebSocket,
    minReconnectDelayMs: 5,
    maxReconnectDelayMs: 20,
  });
  const first = client.connect();
  const conn = await gateway.next();
  await assert.rejects(first, (err) => err.code === 'token_unavailable' && /auth backend down/.test(err.detail));
  assert.equal(await conn.closed, 4000);
  const retry = client.connect();
  const again = await gateway.next();
  assert.equal(await again.authorize(), 'fresh');
  await retry;
  assert.equal(calls, 2);
});
