// A headless Chromium driven over the Chrome DevTools Protocol, and a
// static file server for the pages it opens.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, sep } from 'node:path';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Queue, within } from './queue.mjs';

const CHROMIUM = '/usr/bin/chromium';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript' };

/** Serves the files under `root` whose paths start with one of `prefixes`. */
export async function staticServer(root, prefixes) {
  const server = createServer((req, res) => {
    let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (path.endsWith('/')) path += 'index.html';
    const file = normalize(join(root, path));
    const allowed = prefixes.some((p) => file.startsWith(join(root, p) + sep));
    if (req.method !== 'GET' || !allowed || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    res.end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

export class Chromium {
  static async launch() {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`${CHROMIUM} not found: the browser test drives a real Chromium (apt-get install -y chromium)`);
    }
    const browser = new Chromium();
    browser.profile = mkdtempSync(join(tmpdir(), 'topicgate-js-chromium-'));
    browser.child = spawn(
      CHROMIUM,
      [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--remote-debugging-port=0',
        `--user-data-dir=${browser.profile}`,
        'about:blank',
      ],
      // Its own process group, so cleanup kills the renderers with it.
      { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
    );
    const log = [];
    const url = await within(
      new Promise((resolve, reject) => {
        createInterface({ input: browser.child.stderr }).on('line', (line) => {
          const found = line.trim().match(/^DevTools listening on (ws:\/\/\S+)/);
          if (found) resolve(found[1]);
          else log.push(line);
        });
        browser.child.on('error', reject);
        browser.child.on('exit', () => reject(new Error(`Chromium exited:\n${log.join('\n')}`)));
      }),
      'Chromium to listen for DevTools',
    );
    browser.cdp = await Cdp.connect(url);
    return browser;
  }

  /** Opens `url` in a new tab and waits for its load event. */
  async open(url) {
    const { targetId } = await this.cdp.call('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.cdp.call('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this.cdp, sessionId);
    await page.call('Page.enable');
    await page.call('Runtime.enable');
    const loaded = this.cdp.event(sessionId, 'Page.loadEventFired');
    await page.call('Page.navigate', { url });
    await loaded;
    return page;
  }

  close() {
    this.cdp?.ws.close();
    try {
      process.kill(-this.child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    rmSync(this.profile, { recursive: true, force: true });
  }
}

class Cdp {
  nextId = 1;
  replies = new Map();
  /** Events by `sessionId method`. */
  events = new Map();

  static async connect(url) {
    const cdp = new Cdp();
    cdp.ws = new WebSocket(url);
    await within(new Promise((resolve, reject) => {
      cdp.ws.once('open', resolve);
      cdp.ws.once('error', reject);
    }), 'the DevTools connection');
    cdp.ws.on('message', (data) => {
      const message = JSON.parse(String(data));
      if (message.id !== undefined) {
        this.settle(cdp, message);
      } else {
        cdp.queue(`${message.sessionId} ${message.method}`).push(message.params);
      }
    });
    return cdp;
  }

  static settle(cdp, message) {
    const reply = cdp.replies.get(message.id);
    cdp.replies.delete(message.id);
    if (message.error) reply?.reject(new Error(`${reply.method}: ${JSON.stringify(message.error)}`));
    else reply?.resolve(message.result);
  }

  queue(key) {
    if (!this.events.has(key)) this.events.set(key, new Queue());
    return this.events.get(key);
  }

  call(method, params = {}, sessionId) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ id, method, params, ...(sessionId && { sessionId }) }));
    return within(new Promise((resolve, reject) => this.replies.set(id, { resolve, reject, method })), method);
  }

  event(sessionId, method) {
    return this.queue(`${sessionId} ${method}`).next(method);
  }
}

class Page {
  constructor(cdp, sessionId) {
    this.cdp = cdp;
    this.sessionId = sessionId;
  }

  call(method, params) {
    return this.cdp.call(method, params, this.sessionId);
  }

  /** Evaluates `expression` in the page, awaiting a promise; returns its value. */
  async eval(expression) {
    const reply = await this.call('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (reply.exceptionDetails) throw new Error(`${expression} threw: ${JSON.stringify(reply.exceptionDetails)}`);
    return reply.result.value;
  }

  /**
   * Waits until the function body `probe` returns something truthy, and
   * returns it. The page tells nothing over DevTools when its DOM changes,
   * so the wait runs in the page: a MutationObserver re-runs the probe on
   * every change.
   */
  waitFor(what, probe) {
    return within(
      this.eval(`new Promise((resolve) => {
        const probe = () => { ${probe} };
        const first = probe();
        if (first) { resolve(first); return; }
        const observer = new MutationObserver(() => {
          const value = probe();
          if (value) { observer.disconnect(); resolve(value); }
        });
        observer.observe(document.documentElement, { subtree: true, childList: true, attributes: true, characterData: true });
      })`),
      what,
    );
  }
}
