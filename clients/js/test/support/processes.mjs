// The real parts: a `redis-server` and the `topicgate` binary, each started
// by the test on a free port (never Redis's 6379) and stopped after it.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { EVENT_TIMEOUT_MS, within } from './queue.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, '../../../..');

/** The gateway binary: `TOPICGATE_BIN` (set by `cargo test`), else the debug build. */
export function gatewayBinary() {
  const bin = process.env.TOPICGATE_BIN ?? join(REPO, 'target/debug/topicgate');
  if (!existsSync(bin)) {
    throw new Error(`no gateway binary at ${bin}: run through \`cargo test --test js_client\`, or set TOPICGATE_BIN`);
  }
  return bin;
}

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Reads `child`'s stdout lines; `waitFor(needle)` resolves with the first later line containing it. */
function lineWatcher(child, name) {
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    for (const waiter of [...waiters]) {
      if (line.includes(waiter.needle)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  child.on('exit', () => {
    for (const waiter of waiters.splice(0)) {
      waiter.reject(new Error(`${name} exited before logging ${waiter.needle}:\n${lines.join('\n')}`));
    }
  });
  return (needle) =>
    within(new Promise((res, rej) => waiters.push({ needle, resolve: res, reject: rej })), `${name} to log ${needle}`);
}

export class RedisServer {
  static async start() {
    const redis = new RedisServer();
    redis.port = await freePort();
    await redis.spawn();
    return redis;
  }

  async spawn() {
    this.child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmpdir()],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    const spawned = new Promise((res, rej) => {
      this.child.on('spawn', res);
      this.child.on('error', (err) => rej(new Error(`cannot start redis-server (${err.message}): install it, e.g. apt-get install redis-server`)));
    });
    const waitFor = lineWatcher(this.child, 'redis-server');
    await spawned;
    await waitFor('Ready to accept connections');
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  /** Runs one command over RESP and returns its reply. */
  command(...args) {
    return respCommand(this.port, args);
  }

  async stop() {
    await stopChild(this.child, 'SIGKILL');
  }
}

/** One RESP command on a fresh connection. */
function respCommand(port, args) {
  return within(
    new Promise((res, rej) => {
      const socket = connect(port, '127.0.0.1');
      let buffer = Buffer.alloc(0);
      socket.on('error', rej);
      socket.on('data', (chunk) => {
        buffer = Buffer.concat([buffer, chunk]);
        const parsed = parseResp(buffer, 0);
        if (parsed) {
          socket.end();
          if (parsed.value instanceof Error) rej(parsed.value);
          else res(parsed.value);
        }
      });
      const parts = args.map((a) => Buffer.from(String(a)));
      socket.write(`*${parts.length}\r\n`);
      for (const part of parts) socket.write(Buffer.concat([Buffer.from(`$${part.length}\r\n`), part, Buffer.from('\r\n')]));
    }),
    `redis ${args[0]}`,
  );
}

/** Parses one RESP2 value at `at`; `undefined` while incomplete. */
function parseResp(buffer, at) {
  const end = buffer.indexOf('\r\n', at);
  if (end < 0) return undefined;
  const head = buffer.toString('utf8', at + 1, end);
  const next = end + 2;
  switch (String.fromCharCode(buffer[at])) {
    case '+':
      return { value: head, next };
    case '-':
      return { value: new Error(head), next };
    case ':':
      return { value: Number(head), next };
    case '$': {
      const length = Number(head);
      if (length < 0) return { value: null, next };
      if (buffer.length < next + length + 2) return undefined;
      return { value: buffer.toString('utf8', next, next + length), next: next + length + 2 };
    }
    case '*': {
      const items = [];
      let cursor = next;
      for (let i = 0; i < Number(head); i++) {
        const item = parseResp(buffer, cursor);
        if (!item) return undefined;
        items.push(item.value);
        cursor = item.next;
      }
      return { value: items, next: cursor };
    }
    default:
      return { value: new Error(`unexpected RESP byte ${buffer[at]}`), next };
  }
}

export const SECRET = 'js-client-test-secret';

/** An HS256 token signed with SECRET; `exp` one hour ahead unless given. */
export function signToken(claims = {}) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  const unsigned = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(body)}`;
  return `${unsigned}.${createHmac('sha256', SECRET).update(unsigned).digest('base64url')}`;
}

/**
 * The gateway binary on a free port with a config file of its own. `toml`
 * is appended to a base that sets the port, jwt mode with SECRET and no
 * leeway (plus `auth`, more `[auth]` keys), and the Redis broker when
 * `redis` is given (memory otherwise).
 */
export class Gateway {
  static async start(redis, toml = '', auth = '') {
    const gateway = new Gateway();
    gateway.dir = mkdtempSync(join(tmpdir(), 'topicgate-js-'));
    gateway.configPath = join(gateway.dir, 'config.toml');
    gateway.port = await freePort();
    gateway.redis = redis;
    gateway.auth = auth;
    gateway.writeConfig(toml);
    await gateway.spawn();
    return gateway;
  }

  /** Replaces the config file atomically, as an editor's save does. */
  writeConfig(toml) {
    const broker = this.redis
      ? `[broker]\nkind = "redis"\n[redis]\nurl = "${this.redis.url}"\nreconnect_max_secs = 1\n`
      : '[broker]\nkind = "memory"\n';
    const text =
      `[server]\nbind = "127.0.0.1:${this.port}"\n` +
      `[auth]\nmode = "jwt"\n${this.auth}[auth.jwt]\nsecret = "${SECRET}"\nleeway_secs = 0\n` +
      `${broker}${toml}`;
    const temp = join(this.dir, 'config.toml.tmp');
    writeFileSync(temp, text);
    renameSync(temp, this.configPath);
  }

  async spawn() {
    this.child = spawn(gatewayBinary(), ['--config', this.configPath], {
      env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.waitForLine = lineWatcher(this.child, 'topicgate');
    this.exited = new Promise((res) => this.child.on('exit', (code, signal) => res({ code, signal })));
    await this.ready();
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  /** Waits until `/readyz` answers 200: bound, and Redis connected. */
  ready() {
    return this.readyz(200);
  }

  /** Waits until `/readyz` answers `status`: readiness is the gateway's own state, seen only by asking. */
  async readyz(status) {
    const deadline = Date.now() + EVENT_TIMEOUT_MS;
    for (;;) {
      const seen = await fetch(`http://127.0.0.1:${this.port}/readyz`).then(
        (r) => r.status,
        () => 0,
      );
      if (seen === status) return;
      if (Date.now() > deadline) throw new Error(`/readyz did not answer ${status} in time (last ${seen})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** SIGTERM, then waits for the exit. */
  async stop() {
    await stopChild(this.child, 'SIGTERM');
  }

  async restart() {
    await this.stop();
    await this.spawn();
  }

  async cleanup() {
    await stopChild(this.child, 'SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

async function stopChild(child, signal) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((res) => child.once('exit', res));
  child.kill(signal);
  await within(exited, `the process to exit on ${signal}`);
}
