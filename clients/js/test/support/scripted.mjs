// A scripted gateway: a `ws` server on a free port that greets each
// connection exactly as topicgate does and lets the test read each request
// and answer with the frames docs/PROTOCOL.md shows. It stands in for
// protocol features the test needs to drive precisely (history, expiry,
// close codes).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { randomUUID } from 'node:crypto';
import WebSocket, { WebSocketServer } from 'ws';
import { Queue } from './queue.mjs';

export class ScriptedGateway {
  #wss;
  #connections = new Queue();
  /** Every connection accepted so far. */
  accepted = 0;

  static async start() {
    const gateway = new ScriptedGateway();
    gateway.#wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(gateway.#wss, 'listening');
    gateway.#wss.on('connection', (ws) => {
      gateway.accepted += 1;
      gateway.#connections.push(new ScriptedConnection(ws));
    });
    return gateway;
  }

  get url() {
    return `ws://127.0.0.1:${this.#wss.address().port}/ws`;
  }

  /** The next connection a client opens, greeted. */
  next() {
    return this.#connections.next('a client connection');
  }

  /** No connection waiting to be taken. */
  get idle() {
    return this.#connections.length === 0;
  }

  async stop() {
    for (const ws of this.#wss.clients) ws.terminate();
    this.#wss.close();
  }
}

export class ScriptedConnection {
  #ws;
  #frames = new Queue();
  session = randomUUID();
  /** Resolves with the close code once the socket closed. */
  closed;

  constructor(ws) {
    this.#ws = ws;
    this.closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
    ws.on('message', (data) => this.#frames.push(JSON.parse(String(data))));
    this.send({ action: 'connect', message: 'connection established' });
    this.send({ action: 'session', message: 'waiting for create session', session: this.session });
  }

  send(frame) {
    this.#ws.send(JSON.stringify(frame));
  }

  /** The next request; asserts its action and session. */
  async expect(action) {
    const frame = await this.#frames.next(`a ${action} request`);
    assert.equal(frame.action, action, `expected ${action}, got ${JSON.stringify(frame)}`);
    assert.equal(frame.session, this.session);
    return frame;
  }

  /** Reads an authorization and accepts it; returns its token. */
  async authorize() {
    const request = await this.expect('authorization');
    this.send({ action: 'session', message: 'session authenticated', id: request.id });
    return request.context;
  }

  /** Reads a subscribe and confirms it with `extra` fields (epoch, offset, recovered). */
  async confirmSubscribe(extra = {}) {
    const request = await this.expect('subscribe');
    this.send({ action: 'subscribe', message: 'context subscribed', context: request.context, id: request.id, ...extra });
    return request;
  }

  /** A delivery, recorded when `offset` is given. */
  deliver(topic, snapshot, offset, epoch) {
    this.send({ action: 'message', topic, snapshot, ...(offset !== undefined && { offset, epoch }) });
  }

  /** The gateway's final frame and close frame. */
  disconnect(error, code) {
    this.send({ action: 'connect', message: 'client disconnect', error });
    this.#ws.close(code);
  }

  /** Drops the TCP connection without a close frame, as a network failure does. */
  drop() {
    this.#ws.terminate();
  }

  /** No request waiting to be read. */
  get quiet() {
    return this.#frames.length === 0;
  }
}

export { WebSocket };
