/**
 * The wait before reconnect attempt `attempt` (0 for the first after a
 * success): exponential backoff with full jitter above a floor. The ceiling
 * doubles with each failed attempt, from `2 * minMs` up to `maxMs`, and the
 * delay is drawn uniformly between `minMs` and that ceiling, so a fleet of
 * clients dropped together spreads out, and no client ever retries sooner
 * than `minMs`.
 */
export function backoffDelay(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** (attempt + 1));
  return Math.round(minMs + random() * Math.max(0, ceiling - minMs));
}
