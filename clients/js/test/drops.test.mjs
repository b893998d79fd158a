// Zero loss, zero duplicates through repeated forced drops while messages
// are published continuously, against a small in-test model of a gateway
// with history: it records every message with the next offset, replays from
// `since` on subscribe and then goes on live, and (as a replica whose Redis
// link delivers late) sometimes repeats a frame the client already has.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';
import { TopicgateClient } from '../dist/index.mjs';
import { deferred, within } from './support/queue.mjs';

const TOPIC = 'chat-drops';
const EPOCH = 'e7';

class HistoryGateway {
  /** Recorded payloads; offset n is history[n - 1]. */
  history = [];
  /** Sockets subscribed to TOPIC, live. */
  live = new Set();
  connections = 0;

  async start() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(this.wss, 'listening');
    this.wss.on('connection', (ws) => this.accept(ws));
    return `ws://127.0.0.1:${this.wss.address().port}/ws`;
  }

  accept(ws) {
    this.connections += 1;
    const session = randomUUID();
    const send = (frame) => ws.send(JSON.stringify(frame));
    send({ action: 'connect', message: 'connection established' });
    send({ action: 'session', message: 'waiting for create session', session });
    ws.on('close', () => this.live.delete(ws));
    ws.on('message', (data) => {
      const request = JSON.parse(String(data));
      assert.equal(request.session, session);
      if (request.action === 'authorization') {
        send({ action: 'session', message: 'session authenticated', id: request.id });
      } else if (request.action === 'subscribe') {
        const last = this.history.length;
        const since = request.since;
        const reply = { action: 'subscribe', message: 'context subscribed', context: TOPIC, id: request.id };
        if (last > 0) Object.assign(reply, { epoch: EPOCH, offset: last });
        if (since) reply.recovered = since.epoch === EPOCH && since.offset <= last;
        send(reply);
        if (reply.recovered) {
          for (let offset = since.offset + 1; offset <= last; offset++) this.sendRecorded(ws, offset);
        }
        this.live.add(ws);
        this.onLive?.();
      }
    });
  }

  sendRecorded(ws, offset) {
    ws.send(JSON.stringify({ action: 'message', topic: TOPIC, snapshot: this.history[offset - 1], offset, epoch: EPOCH }));
  }

  publish(payload) {
    this.history.push(payload);
    const offset = this.history.length;
    for (const ws of this.live) {
      this.sendRecorded(ws, offset);
      // Every seventh message arrives twice, as a late frame would.
      if (offset % 7 === 0) this.sendRecorded(ws, offset);
    }
  }

  /** Resolves once a client is subscribed live. */
  whenLive() {
    if (this.live.size > 0) return Promise.resolve();
    return within(new Promise((resolve) => (this.onLive = resolve)), 'the client to resubscribe');
  }

  /** Cuts every connection without a close frame. */
  dropAll() {
    for (const ws of this.wss.clients) ws.terminate();
  }

  stop() {
    this.dropAll();
    this.wss.close();
  }
}

test('repeated forced drops during a continuous publish lose nothing and duplicate nothing', async (t) => {
  const gateway = new HistoryGateway();
  const url = await gateway.start();
  t.after(() => gateway.stop());
  const total = 600;
  const received = [];
  const done = deferred();
  const client = new TopicgateClient(url, { token: 't', WebSocket, minReconnectDelayMs: 1, maxReconnectDelayMs: 5 });
  t.after(() => client.close());
  await client.connect();
  gateway.publish({ n: 1 });
  const sub = await client.subscribe(TOPIC, (data, ctx) => {
    assert.equal(ctx.offset, data.n);
    received.push(data.n);
    if (data.n === total) done.resolve();
  });
  const gaps = [];
  sub.on('gap', (gap) => gaps.push(gap));

  // Publish one message per tick, reconnecting or not; every 50 messages,
  // drop the connection (once the client is back, so that every drop hits).
  let drops = 0;
  for (let n = 2; n <= total; n++) {
    gateway.publish({ n });
    if (n % 50 === 0 && n < total) {
      await gateway.whenLive();
      gateway.dropAll();
      drops += 1;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  await within(done.promise, `all ${total} messages`);
  assert.equal(drops, total / 50 - 1);
  assert.equal(gateway.connections, drops + 1);
  assert.deepEqual(received, Array.from({ length: total - 1 }, (_, i) => i + 2), 'offsets 2..total, once each, in order');
  assert.deepEqual(gaps, []);
  assert.deepEqual(sub.position, { epoch: EPOCH, offset: total });
});
