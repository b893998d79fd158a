import { backoffDelay } from './backoff.js';
import { Emitter } from './emitter.js';
import { Connection, failPending, type WebSocketConstructor, type WebSocketLike } from './connection.js';
import { TopicgateError } from './errors.js';
import { parseFrame, positionOf, type ServerFrame } from './protocol.js';
import { Subscription, type MessageHandler } from './subscription.js';

/** The connection's state, as the `state` event reports it. */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'closed';

/** A token, or a function the client calls for a fresh one on every (re)authorization. */
export type TokenSource = string | (() => string | Promise<string>);

export type { WebSocketConstructor, WebSocketLike };

export interface TopicgateClientOptions {
  /** Omit in bypass mode, where no authorization is needed. */
  token?: TokenSource;
  /** Defaults to `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Shortest wait before a reconnect (default 250). */
  minReconnectDelayMs?: number;
  /** Longest wait before a reconnect (default 10000). */
  maxReconnectDelayMs?: number;
}

/** Events of the client. */
export type ClientEvents = {
  state: [ConnectionState];
  error: [TopicgateError];
};

interface Deferred<T> {
  resolve(value: T): void;
  reject(err: TopicgateError): void;
}

/** A topicgate client: connects, authorizes, subscribes, and keeps it so. */
export class TopicgateClient extends Emitter<ClientEvents> {
  private readonly url: string;
  private readonly options: TopicgateClientOptions;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private conn: Connection | undefined;
  private status: ConnectionState = 'disconnected';
  /** `close()` was called and no `connect()` since. */
  private stopped = true;
  /** Connection attempts since the last successful authorization. */
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  /** Pending resubscribe retries, cleared by `close()` so nothing outlives it. */
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private waiters: Deferred<void>[] = [];
  private readonly subs = new Map<string, Subscription>();
  /** Settles each subscription's `subscribe()` promise on its first reply. */
  private readonly firstReply = new Map<Subscription, Deferred<Subscription>>();
  private nextId = 0;

  constructor(url: string, options: TopicgateClientOptions = {}) {
    super();
    this.url = url;
    this.options = options;
    this.minDelay = Math.max(0, options.minReconnectDelayMs ?? 250);
    this.maxDelay = Math.max(this.minDelay, options.maxReconnectDelayMs ?? 10_000);
  }

  /** The connection's current state. */
  get state(): ConnectionState {
    return this.status;
  }

  /**
   * Connects and resolves once authorized (without a `token`, once the
   * gateway greets). Rejects with the first authorization failure (e.g.
   * `invalid_token`); the client keeps retrying with backoff, asking `token`
   * again, until `close()`. A gateway that cannot be reached is retried
   * without rejecting.
   */
  connect(): Promise<void> {
    if (this.conn?.ready) return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (this.stopped) {
      this.stopped = false;
      this.open();
    }
    return promise;
  }

  /**
   * Subscribes `handler` to `topic`. Resolves once the gateway confirms;
   * rejects with a {@link TopicgateError} carrying the gateway's code
   * (`forbidden`, `limit_exceeded`, `unavailable`, `bad_request`, ...).
   * Called before `connect()` settles, it waits for the connection.
   */
  subscribe(topic: string, handler: MessageHandler): Promise<Subscription> {
    if (this.subs.has(topic)) {
      return Promise.reject(new TopicgateError('already_subscribed', `already subscribed to ${topic}`));
    }
    const sub = new Subscription(this, topic, handler);
    this.subs.set(topic, sub);
    const promise = new Promise<Subscription>((resolve, reject) =>
      this.firstReply.set(sub, { resolve, reject }),
    );
    if (this.conn?.ready) this.sendSubscribe(this.conn, sub);
    return promise;
  }

  /** Closes the connection for good: ends every subscription, no reconnect. */
  close(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    for (const timer of this.retryTimers) clearTimeout(timer);
    this.retryTimers.clear();
    const conn = this.conn;
    if (conn) {
      this.conn = undefined;
      failPending(conn, new TopicgateError('closed', 'the client was closed'));
      conn.ws.close(1000, 'client closed');
    }
    const closed = new TopicgateError('closed', 'the client was closed');
    for (const waiter of this.waiters.splice(0)) waiter.reject(closed);
    for (const sub of this.subs.values()) {
      sub.status = 'unsubscribed';
      this.firstReply.get(sub)?.reject(closed);
    }
    this.subs.clear();
    this.firstReply.clear();
    this.setState('closed');
  }

  /** @internal */
  async unsubscribeTopic(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.topic) !== sub) return;
    this.subs.delete(sub.topic);
    sub.status = 'unsubscribed';
    const conn = this.conn;
    if (!conn?.ready) return;
    const reply = await this.request(conn, { action: 'unsubscribe', context: sub.topic });
    if (reply instanceof TopicgateError) return;
    if (reply.error) throw new TopicgateError(reply.error, reply.detail ?? '');
  }

  private setState(state: ConnectionState): void {
    if (this.status === state) return;
    this.status = state;
    this.emit('state', state);
  }

  private open(): void {
    this.reconnectTimer = undefined;
    this.setState('connecting');
    const Ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    let ws: WebSocketLike;
    try {
      if (!Ctor) throw new Error('no WebSocket class: pass one in the WebSocket option');
      ws = new Ctor(this.url);
    } catch (err) {
      // A bad URL or a missing WebSocket class does not heal by retrying.
      const error = new TopicgateError('bad_request', String(err));
      this.emit('error', error);
      for (const waiter of this.waiters.splice(0)) waiter.reject(error);
      this.close();
      return;
    }
    const conn = new Connection(ws);
    this.conn = conn;
    ws.onmessage = (event: { data: unknown }) => {
      if (this.conn !== conn) return;
      const frame = parseFrame(typeof event.data === 'string' ? event.data : String(event.data));
      if (frame) this.handleFrame(conn, frame);
      else this.emit('error', new TopicgateError('protocol_error', 'a frame that is not a JSON object'));
    };
    ws.onclose = () => {
      if (this.conn === conn) this.dropped(conn);
    };
    ws.onerror = () => {};
  }

  /** The connection ended without `close()`: report why and reconnect after a backoff. */
  private dropped(conn: Connection): void {
    this.conn = undefined;
    failPending(conn, new TopicgateError('disconnected', 'the connection closed'));
    if (conn.farewell) this.emit('error', conn.farewell);
    for (const sub of this.subs.values()) {
      sub.status = 'subscribing';
      sub.inflight = false;
      sub.rejoining = false;
    }
    if (this.stopped) return;
    this.setState('disconnected');
    const delay = backoffDelay(this.attempt++, this.minDelay, this.maxDelay);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  /** Gives up on this connection (a refused token): close it and reconnect after a backoff. */
  private abandon(conn: Connection): void {
    if (this.conn !== conn) return;
    conn.ws.close(4000, 'reauthorizing');
    this.dropped(conn);
  }

  private handleFrame(conn: Connection, frame: ServerFrame): void {
    const id = frame.id;
    if (typeof id === 'number' && conn.pending.has(id)) {
      const settle = conn.pending.get(id);
      conn.pending.delete(id);
      settle?.(frame);
      return;
    }
    switch (frame.action) {
      case 'session':
        if (typeof frame.session === 'string' && !frame.error) {
          conn.session = frame.session;
          void this.authorize(conn);
        } else if (frame.error === 'token_expired') {
          this.expired(conn);
        }
        return;
      case 'message':
        this.deliver(frame);
        return;
      case 'unsubscribe':
        if (frame.error && typeof frame.context === 'string') this.revoked(conn, frame.context, frame);
        return;
      case 'gap':
        this.gap(frame);
        return;
      case 'connect':
        if (frame.error) conn.farewell = new TopicgateError(frame.error, frame.message ?? '');
        return;
      default:
        if (frame.error) this.emit('error', new TopicgateError(frame.error, frame.detail ?? ''));
    }
  }

  /** Authorizes `conn` (calling `token` when it is a function), then resubscribes. */
  private async authorize(conn: Connection): Promise<void> {
    const source = this.options.token;
    if (source === undefined) {
      this.ready(conn);
      return;
    }
    let token: string;
    try {
      token = typeof source === 'function' ? await source() : source;
    } catch (err) {
      this.authFailed(conn, new TopicgateError('token_unavailable', String(err)));
      return;
    }
    if (this.conn !== conn) return;
    const reply = await this.request(conn, { action: 'authorization', context: token });
    if (reply instanceof TopicgateError) return;
    if (reply.error) this.authFailed(conn, new TopicgateError(reply.error, reply.detail ?? ''));
    else this.ready(conn);
  }

  private authFailed(conn: Connection, error: TopicgateError): void {
    if (this.conn !== conn) return;
    this.emit('error', error);
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.abandon(conn);
  }

  private ready(conn: Connection): void {
    conn.ready = true;
    this.attempt = 0;
    this.setState('connected');
    for (const waiter of this.waiters.splice(0)) waiter.resolve();
    for (const sub of this.subs.values()) {
      if (sub.status !== 'subscribed' && !sub.inflight) this.sendSubscribe(conn, sub);
    }
  }

  /** `session expired`: the gateway dropped every subscription; re-authorize on this connection. */
  private expired(conn: Connection): void {
    conn.ready = false;
    for (const sub of this.subs.values()) sub.status = 'subscribing';
    void this.authorize(conn);
  }

  private request(conn: Connection, body: Record<string, unknown>): Promise<ServerFrame | TopicgateError> {
    const id = ++this.nextId;
    return new Promise((resolve) => {
      conn.pending.set(id, resolve);
      try {
        conn.ws.send(JSON.stringify({ ...body, session: conn.session, id }));
      } catch (err) {
        conn.pending.delete(id);
        resolve(new TopicgateError('disconnected', String(err)));
      }
    });
  }

  /** Sends a subscribe for `sub`, with `since` when it has a position, and applies the reply. */
  private async sendSubscribe(conn: Connection, sub: Subscription): Promise<void> {
    sub.inflight = true;
    const since = sub.pos;
    const reply = await this.request(conn, {
      action: 'subscribe',
      context: sub.topic,
      ...(since && { since }),
    });
    sub.inflight = false;
    if (reply instanceof TopicgateError || this.subs.get(sub.topic) !== sub) return;
    if (reply.error) {
      this.subscribeFailed(conn, sub, new TopicgateError(reply.error, reply.detail ?? ''));
      return;
    }
    const position = positionOf(reply);
    if (sub.confirmed && !since && position && position.offset > 0) {
      // Held before, when the topic had no history: every message recorded
      // since is one this subscription missed while away.
      await this.rejoinFromStart(conn, sub, position.epoch);
      return;
    }
    sub.confirm(since, reply);
    if (!sub.confirmed) {
      sub.confirmed = true;
      this.firstReply.get(sub)?.resolve(sub);
      this.firstReply.delete(sub);
    }
  }

  /**
   * Subscribes `sub` again from offset 0 of `epoch`, so the history's
   * whole run is replayed in order. Recorded deliveries that arrive before
   * the unsubscribe's reply are dropped: the replay brings them again.
   * Should anything interrupt this, the position is already set, and the
   * next resubscribe recovers from it.
   */
  private async rejoinFromStart(conn: Connection, sub: Subscription, epoch: string): Promise<void> {
    sub.pos = { epoch, offset: 0 };
    sub.inflight = true;
    sub.rejoining = true;
    const left = await this.request(conn, { action: 'unsubscribe', context: sub.topic });
    sub.rejoining = false;
    sub.inflight = false;
    if (left instanceof TopicgateError || this.conn !== conn || this.subs.get(sub.topic) !== sub) return;
    await this.sendSubscribe(conn, sub);
  }

  private subscribeFailed(conn: Connection, sub: Subscription, error: TopicgateError): void {
    if (!sub.confirmed) {
      this.subs.delete(sub.topic);
      sub.status = 'unsubscribed';
      this.firstReply.get(sub)?.reject(error);
      this.firstReply.delete(sub);
      return;
    }
    if (error.code === 'forbidden' || error.code === 'bad_request') {
      this.subs.delete(sub.topic);
      sub.status = 'unsubscribed';
      sub.fire('revoked', sub.revokedDetail ?? error.detail);
      return;
    }
    // Not authorized right now (the token expired): `ready` resubscribes.
    if (error.code === 'unauthenticated' && !conn.ready) return;
    this.emit('error', error);
    const delay = backoffDelay(sub.retries++, this.minDelay, this.maxDelay);
    const timer = setTimeout(() => {
      this.retryTimers.delete(timer);
      if (this.conn === conn && conn.ready && this.subs.get(sub.topic) === sub && sub.status !== 'subscribed' && !sub.inflight) {
        void this.sendSubscribe(conn, sub);
      }
    }, delay);
    this.retryTimers.add(timer);
  }

  /**
   * The gateway removed a subscription. The frame alone does not say whether
   * for good (an ACL change) or until the session re-authorizes (token
   * expiry, announced right after): a resubscribe tells, and `revoked` is
   * emitted only when it is refused.
   */
  private revoked(conn: Connection, topic: string, frame: ServerFrame): void {
    const sub = this.subs.get(topic);
    if (!sub) return;
    sub.status = 'subscribing';
    sub.revokedDetail = frame.detail ?? frame.message ?? 'revoked';
    if (!sub.inflight) void this.sendSubscribe(conn, sub);
  }

  private deliver(frame: ServerFrame): void {
    const sub = typeof frame.topic === 'string' ? this.subs.get(frame.topic) : undefined;
    sub?.deliver(frame);
  }

  private gap(frame: ServerFrame): void {
    const sub = typeof frame.context === 'string' ? this.subs.get(frame.context) : undefined;
    sub?.lost(frame);
  }
}
