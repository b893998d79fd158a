// Prints every message of a topic as a JSON line, and keeps doing so
// through network drops, gateway restarts and token expiry: the client
// reconnects with backoff, re-authorizes, resubscribes, and recovers
// recorded messages it missed.
//
//   TOPICGATE_URL=ws://127.0.0.1:3000/ws TOPICGATE_TOKEN=... npm start -- chat-room
//
// Without TOPICGATE_TOKEN it does not authorize (the gateway's bypass mode).
// Node 22 and browsers have a global WebSocket; on Node 20 pass the `ws`
// package's class as here.
import WebSocket from 'ws';
import { TopicgateClient, TopicgateError } from 'topicgate-client';

const url = process.env.TOPICGATE_URL ?? 'ws://127.0.0.1:3000/ws';
const topics = process.argv.slice(2);
if (topics.length === 0) topics.push('test-channel');

// A real app would fetch a fresh token from its backend here; the client
// calls this again on every reconnect and when the token expires.
async function fetchToken(): Promise<string> {
  const token = process.env.TOPICGATE_TOKEN;
  if (!token) throw new Error('TOPICGATE_TOKEN is not set');
  return token;
}

const client = new TopicgateClient(url, {
  token: process.env.TOPICGATE_TOKEN ? fetchToken : undefined,
  WebSocket,
  minReconnectDelayMs: 250,
  maxReconnectDelayMs: 10_000,
});
client.on('state', (state) => console.error(`state: ${state}`));
client.on('error', (err) => console.error(`error: ${err.code} (${err.detail})`));
process.on('SIGINT', () => client.close());

try {
  await client.connect();
  for (const topic of topics) {
    const sub = await client.subscribe(topic, (data, ctx) => {
      console.log(JSON.stringify({ topic: ctx.topic, offset: ctx.offset, data }));
    });
    sub.on('gap', (gap) => console.error(`gap on ${gap.topic}: reload its state (${gap.detail ?? ''})`));
    sub.on('revoked', (detail) => console.error(`revoked: ${topic} (${detail})`));
    console.error(`subscribed: ${topic}`);
  }
} catch (err) {
  if (err instanceof TopicgateError) console.error(`failed: ${err.code}: ${err.detail}`);
  else console.error(err);
  client.close();
  process.exitCode = 1;
}
