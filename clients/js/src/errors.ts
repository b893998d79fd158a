/**
 * A failure with the gateway's machine-readable code (`forbidden`,
 * `limit_exceeded`, `unavailable`, `invalid_token`, ... as in the gateway's
 * protocol) and its human-readable detail.
 *
 * Codes the client adds itself:
 * - `closed`: `close()` was called while the request was pending;
 * - `already_subscribed`: this client already holds a subscription to the topic;
 * - `token_unavailable`: the `token` function threw or rejected;
 * - `protocol_error`: the server sent a frame this client cannot read.
 */
export class TopicgateError extends Error {
  /** Machine-readable code. */
  readonly code: string;
  /** Human-readable explanation. */
  readonly detail: string;

  constructor(code: string, detail: string) {
    super(detail ? `${code}: ${detail}` : code);
    this.name = 'TopicgateError';
    this.code = code;
    this.detail = detail;
  }
}
