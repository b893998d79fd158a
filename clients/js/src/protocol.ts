/**
 * The frames of the gateway's wire protocol (docs/PROTOCOL.md in the
 * gateway's repository) that this client reads. Every server frame is a JSON
 * object; these are the fields the client looks at.
 */

/** A topic's place in its recorded history. */
export interface Position {
  /** Names one life of the topic's history; offsets restart when it changes. */
  epoch: string;
  /** The last recorded offset seen (1 for a topic's first recorded message). */
  offset: number;
}

/** @internal */
export interface ServerFrame {
  action?: string;
  message?: string;
  id?: number | string;
  error?: string;
  detail?: string;
  session?: string;
  context?: string;
  topic?: string;
  snapshot?: unknown;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
}

/** @internal Parses one text frame; `undefined` when it is not a JSON object. */
export function parseFrame(text: string): ServerFrame | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as ServerFrame)
      : undefined;
  } catch {
    return undefined;
  }
}

/** @internal The position a frame carries, when it carries a valid one. */
export function positionOf(frame: ServerFrame): Position | undefined {
  const { epoch, offset } = frame;
  return typeof epoch === 'string' && typeof offset === 'number' && Number.isInteger(offset)
    ? { epoch, offset }
    : undefined;
}
