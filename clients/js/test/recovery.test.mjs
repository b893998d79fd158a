// History and recovery against a scripted gateway speaking the frames of
// docs/PROTOCOL.md (offset/epoch on deliveries, `since`, `recovered`, the
// `gap` frame): the client resubscribes with its last position, delivers
// every recorded message once and in order, and emits `gap` when recovery
// is impossible.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';
import { TopicgateClient } from '../dist/index.mjs';
import { Queue, nextEvent, record } from './support/queue.mjs';
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

function newClient(options = {}) {
  let tokens = 0;
  client = new TopicgateClient(gateway.url, {
    token: () => `token-${++tokens}`,
    WebSocket,
    minReconnectDelayMs: 5,
    maxReconnectDelayMs: 20,
    ...options,
  });
  return client;
}

/** Connects and subscribes `topic`; the scripted reply carries `position`. */
async function subscribed(topic, position) {
  const received = new Queue();
  const connected = client.connect();
  const conn = await gateway.next();
  await conn.authorize();
  await connected;
  const pending = client.subscribe(topic, (data, ctx) => received.push({ data, ctx }));
  const request = await conn.confirmSubscribe(position);
  assert.equal(request.since, undefined, 'a first subscribe has no since');
  const sub = await pending;
  return { conn, sub, received };
}

/** Reads `count` deliveries and returns their offsets. */
async function offsets(received, count) {
  const seen = [];
  for (let i = 0; i < count; i++) seen.push((await received.next('a delivery')).ctx.offset);
  return seen;
}

test('reconnect resubscribes with since and delivers the replay once, in order', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('chat', { epoch: 'e1', offset: 5 });
  assert.deepEqual(sub.position, { epoch: 'e1', offset: 5 });
  conn.deliver('chat', { n: 6 }, 6, 'e1');
  conn.deliver('chat', { n: 7 }, 7, 'e1');
  assert.deepEqual(await received.next(), { data: { n: 6 }, ctx: { topic: 'chat', offset: 6, epoch: 'e1' } });
  assert.deepEqual(await offsets(received, 1), [7]);

  conn.drop();
  const again = await gateway.next();
  assert.equal(await again.authorize(), 'token-2', 'the token function is asked again');
  const resubscribed = nextEvent(sub, 'subscribed');
  const request = await again.confirmSubscribe({ epoch: 'e1', offset: 10, recovered: true });
  assert.deepEqual(request.since, { epoch: 'e1', offset: 7 });
  assert.deepEqual(await resubscribed, { topic: 'chat', epoch: 'e1', offset: 10, recovered: true });
  // The replay, with a frame the old link brought late, then live traffic
  // that overlaps the replay's end.
  for (const offset of [7, 8, 9, 10, 10, 11]) again.deliver('chat', { n: offset }, offset, 'e1');
  assert.deepEqual(await offsets(received, 4), [8, 9, 10, 11]);
  assert.deepEqual(sub.position, { epoch: 'e1', offset: 11 });
  assert.equal(received.length, 0, 'no duplicate reached the handler');
});

test('recovered false emits gap and continues from the reported position', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('chat', { epoch: 'e1', offset: 3 });
  const gaps = record(sub, 'gap');
  conn.drop();
  const again = await gateway.next();
  await again.authorize();
  const gap = nextEvent(sub, 'gap');
  const request = await again.confirmSubscribe({
    epoch: 'e2',
    offset: 1,
    recovered: false,
    detail: 'the epoch differs',
  });
  assert.deepEqual(request.since, { epoch: 'e1', offset: 3 });
  assert.deepEqual(await gap, { topic: 'chat', epoch: 'e2', offset: 1, detail: 'the epoch differs' });
  again.deliver('chat', 'old', 1, 'e2');
  again.deliver('chat', 'new', 2, 'e2');
  assert.deepEqual(await received.next(), { data: 'new', ctx: { topic: 'chat', offset: 2, epoch: 'e2' } });
  assert.equal(gaps.length, 1);
  assert.deepEqual(sub.position, { epoch: 'e2', offset: 2 });
});

test('the gap frame emits gap and moves the position', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('chat', { epoch: 'e1', offset: 1 });
  const gap = nextEvent(sub, 'gap');
  conn.send({ action: 'gap', message: 'history lost', context: 'chat', epoch: 'e1', offset: 40 });
  assert.deepEqual(await gap, { topic: 'chat', epoch: 'e1', offset: 40, detail: 'history lost' });
  conn.deliver('chat', 'skipped', 40, 'e1');
  conn.deliver('chat', 'next', 41, 'e1');
  assert.deepEqual(await offsets(received, 1), [41]);

  conn.drop();
  const again = await gateway.next();
  await again.authorize();
  const request = await again.confirmSubscribe({ epoch: 'e1', offset: 41, recovered: true });
  assert.deepEqual(request.since, { epoch: 'e1', offset: 41 });
});

test('a delivery under a new epoch emits gap before it is delivered', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('chat', { epoch: 'e1', offset: 9 });
  const order = [];
  sub.on('gap', (info) => order.push(`gap ${info.epoch}`));
  conn.deliver('chat', 'restarted', 1, 'e2');
  const delivery = await received.next();
  order.push(`message ${delivery.ctx.offset}`);
  assert.deepEqual(order, ['gap e2', 'message 1']);
});

test('a topic without history gets no since and deliveries without offsets', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('plain', {});
  assert.equal(sub.position, undefined);
  conn.deliver('plain', 'a');
  conn.deliver('plain', 'a');
  assert.deepEqual(await received.next(), { data: 'a', ctx: { topic: 'plain' } });
  assert.deepEqual(await received.next(), { data: 'a', ctx: { topic: 'plain' } });
  conn.drop();
  const again = await gateway.next();
  await again.authorize();
  const request = await again.confirmSubscribe();
  assert.equal(request.since, undefined);
});

test('session expired re-authorizes on the same connection and resubscribes with since', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('chat', { epoch: 'e1', offset: 2 });
  const revoked = record(sub, 'revoked');
  const states = record(client, 'state');
  // What the gateway sends when the token's exp passes: a revocation per
  // topic, then the expiry.
  conn.send({ action: 'unsubscribe', message: 'context revoked', context: 'chat', error: 'forbidden', detail: 'token expired' });
  conn.send({ action: 'session', message: 'session expired', error: 'token_expired' });
  const check = await conn.expect('subscribe');
  conn.send({ action: 'subscribe', message: 'context unauthenticated', error: 'unauthenticated', detail: 'send a successful authorization first', context: 'chat', id: check.id });
  assert.equal(await conn.authorize(), 'token-2');
  const request = await conn.confirmSubscribe({ epoch: 'e1', offset: 3, recovered: true });
  assert.deepEqual(request.since, { epoch: 'e1', offset: 2 });
  conn.deliver('chat', 'replayed', 3, 'e1');
  assert.deepEqual(await offsets(received, 1), [3]);
  assert.equal(gateway.accepted, 1, 'no reconnect');
  assert.deepEqual(states, []);
  assert.deepEqual(revoked, []);
  assert.equal(sub.state, 'subscribed');
});

test('a revocation the resubscribe confirms emits revoked and ends the subscription', async () => {
  newClient();
  const { conn, sub, received } = await subscribed('news', {});
  const revoked = nextEvent(sub, 'revoked');
  conn.send({ action: 'unsubscribe', message: 'context revoked', context: 'news', error: 'forbidden', detail: 'no longer allowed by the acl' });
  const check = await conn.expect('subscribe');
  conn.send({ action: 'subscribe', message: 'context forbidden', error: 'forbidden', detail: 'no rule allows topic news', context: 'news', id: check.id });
  assert.equal(await revoked, 'no longer allowed by the acl');
  assert.equal(sub.state, 'unsubscribed');
  conn.deliver('news', 'late');
  // A new subscription to the topic is possible again, and it alone receives.
  const again = client.subscribe('news', () => {});
  await conn.confirmSubscribe();
  await again;
  assert.equal(received.length, 0);
});

test('replies are matched by id, whatever their order', async () => {
  newClient();
  const connected = client.connect();
  const conn = await gateway.next();
  await conn.authorize();
  await connected;
  const a = client.subscribe('a', () => {});
  const b = client.subscribe('b', () => {});
  const first = await conn.expect('subscribe');
  const second = await conn.expect('subscribe');
  assert.notEqual(first.id, second.id);
  conn.send({ action: 'subscribe', message: 'context forbidden', error: 'forbidden', detail: 'no', context: second.context, id: second.id });
  conn.send({ action: 'subscribe', message: 'context subscribed', context: first.context, id: first.id });
  assert.equal((await a).topic, 'a');
  await assert.rejects(b, { name: 'TopicgateError', code: 'forbidden', detail: 'no' });
});

test('a resubscribe answered unavailable is retried after a backoff', async () => {
  newClient();
  const { conn, sub } = await subscribed('chat', {});
  const errors = record(client, 'error');
  conn.drop();
  const again = await gateway.next();
  await again.authorize();
  const request = await again.expect('subscribe');
  again.send({ action: 'subscribe', message: 'context unavailable', error: 'unavailable', detail: 'broker is not connected', context: 'chat', id: request.id });
  const resubscribed = nextEvent(sub, 'subscribed');
  await again.confirmSubscribe();
  await resubscribed;
  assert.deepEqual(errors.map((e) => e.code), ['unavailable']);
  assert.equal(sub.state, 'subscribed');
});
