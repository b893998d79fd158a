/** One WebSocket of a client and the requests waiting on it. */
import type { TopicgateError } from './errors.js';
import type { ServerFrame } from './protocol.js';

/**
 * The part of the WebSocket API this client uses: browsers' and the `ws`
 * package's. Event parameters are `any` so that both classes fit; the client
 * reads only `data` of a message event.
 */
export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

/** A WebSocket class: the browser's, or e.g. the `ws` package's on Node < 22. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** @internal One WebSocket and what belongs to it alone; replaced on every reconnect. */
export class Connection {
  /** The session id from the greeting, echoed in every request. */
  session: string | undefined;
  /** Authorized (or, without a token, greeted): requests may go out. */
  ready = false;
  /** Requests awaiting their reply, by id. */
  readonly pending = new Map<number, (frame: ServerFrame | TopicgateError) => void>();
  /** The code of the gateway's final `client disconnect` frame. */
  farewell: TopicgateError | undefined;

  constructor(readonly ws: WebSocketLike) {}
}

/** @internal Settles every request still waiting on `conn` with `error`. */
export function failPending(conn: Connection, error: TopicgateError): void {
  for (const settle of conn.pending.values()) settle(error);
  conn.pending.clear();
}
