/**
 * One hadb node in its own process, driven by the parent benchmark over IPC (see cluster.ts).
 *
 * Started with `fork()`; the parent sends `{ id, task, args }` messages and gets
 * `{ id, ok, value | error }` back. Timestamps it reports are {@link monoMs}: CLOCK_MONOTONIC,
 * which on Linux is one clock for every process of the machine, so a time taken here can be
 * compared with one taken in a sibling process (cluster.ts checks this at start-up).
 *
 * stdout is the parent's stderr: nothing written here can end up after the benchmark's JSON.
 */
import http from 'node:http';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import {
  type ClusterConfig,
  monoMs,
  type StorageCall,
  type TaskName,
  type Tasks,
} from './protocol.ts';

let node: HadbNode | undefined;
let db: HadbDatabase | undefined;
let leases: ReturnType<typeof createFsLeaseStore> | undefined;
const config = JSON.parse(process.argv[2] ?? '{}') as ClusterConfig & { id: string };
/** How long this process's event loop was blocked: a stall here delays everything it does. */
const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();

/** Storage calls, timed, when the config asks for tracing (for a stage breakdown). */
let storageCalls: StorageCall[] = [];

function traced(storage: StorageBackend): StorageBackend {
  const time = async <T>(op: StorageCall['op'], key: string, call: () => Promise<T>) => {
    const start = monoMs();
    try {
      return await call();
    } finally {
      storageCalls.push({ op, key, start, end: monoMs() });
    }
  };
  return {
    put: (key, body) => time('put', key, () => storage.put(key, body)),
    putIfAbsent: (key, body) => time('putIfAbsent', key, () => storage.putIfAbsent(key, body)),
    get: (key, range) => time('get', key, () => storage.get(key, range)),
    list: (prefix, options) => time('list', prefix, () => storage.list(prefix, options)),
    delete: (keys) => time('delete', keys.join(','), () => storage.delete(keys)),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function database(): HadbDatabase {
  if (!db) throw new Error(`${config.id}: open first`);
  return db;
}

/** A ~`chars`-character text value that varies with `n` (deflate does not reduce it to nothing). */
function valueFor(n: number, chars: number): string {
  let text = '';
  let x = Math.imul(n, 2654435761) >>> 0;
  while (text.length < chars) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    text += x.toString(36);
  }
  return text.slice(0, chars);
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = monoMs() + timeoutMs;
  while (!check()) {
    if (monoMs() > deadline) throw new Error(`${config.id}: timed out waiting for ${what}`);
    await sleep(5);
  }
}

const tasks: { [K in TaskName]: (args: Tasks[K]['args']) => Promise<Tasks[K]['value']> } = {
  async open({ schema }) {
    const fsStorage = createFsStorage({ root: path.join(config.dir, 'storage') });
    const storage = config.traceStorage ? traced(fsStorage) : fsStorage;
    leases = createFsLeaseStore({ path: path.join(config.dir, 'leases.sqlite') });
    node = await createNode({
      id: config.id,
      secret: config.secret,
      dataDir: path.join(config.dir, 'nodes', config.id),
      storage,
      leases,
      timing: config.timing,
      durability: 'replicated',
    });
    // The schema is written 'replicated' (the node's default), so a follower opened after this
    // resolves can pull it from storage.
    db = await node.open(config.db, { schema });
    return { role: db.role, address: node.address ?? null, position: db.position };
  },

  async openMany({ names, hibernateAfterMs, maxOpenDatabases }) {
    leases = createFsLeaseStore({ path: path.join(config.dir, 'leases.sqlite') });
    const opened = await createNode({
      id: config.id,
      secret: config.secret,
      dataDir: path.join(config.dir, 'nodes', config.id),
      storage: createFsStorage({ root: path.join(config.dir, 'storage') }),
      leases,
      timing: config.timing,
      leaseScope: 'node',
      hibernateAfterMs,
      maxOpenDatabases,
      durability: 'replicated',
    });
    node = opened;
    for (let i = 0; i < names.length; i += 100) {
      await Promise.all(names.slice(i, i + 100).map((name) => opened.open(name)));
    }
    const all = opened.databases();
    // The first node leads them all; leaders write their epoch-start records after open().
    const writable = (d: HadbDatabase) =>
      (d as HadbDatabase & { readonly writable?: boolean }).writable === true;
    await waitFor(() => all.every(writable), 300_000, 'leading every database');
    return { leaders: all.length };
  },

  async clock() {
    return { t: monoMs() };
  },

  async status() {
    const d = database();
    return { role: d.role, position: d.position, isCaughtUp: d.isCaughtUp };
  },

  async loopDelay({ reset }) {
    const value = {
      p50Ms: loopDelay.percentile(50) / 1e6,
      p99Ms: loopDelay.percentile(99) / 1e6,
      maxMs: loopDelay.max / 1e6,
    };
    if (reset) loopDelay.reset();
    return value;
  },

  async waitRole({ role, timeoutMs }) {
    const d = database();
    await waitFor(() => d.role === role, timeoutMs, `role ${role}`);
    return { role: d.role, position: d.position };
  },

  async waitPosition({ seq, timeoutMs }) {
    const d = database();
    // A local read: queries wait for a pull in progress, and the loop keeps the process awake.
    await waitFor(() => d.position.seq >= seq, timeoutMs, `position ${seq}`);
    return { position: d.position };
  },

  /**
   * Writes rows n = startN .. startN + count - 1 on a fixed schedule (rate per second, absolute
   * deadlines, so a slow write does not shift the ones after it; one that is late goes at once). Reports when each commit
   * happened: the write runs synchronously inside `execute()` on the leader (the statement and
   * the COMMIT run before the call returns its promise), so the time taken right after the call
   * returns is the commit instant to within the statement's own few microseconds.
   */
  async writeSteady({ rate, count, startN, durability, valueChars }) {
    const d = database();
    const n: number[] = [];
    const committedAt: number[] = [];
    const resolvedMs: number[] = [];
    const lateMs: number[] = [];
    const tokens: number[] = [];
    const start = monoMs() + 5;
    for (let i = 0; i < count; i++) {
      const due = start + (i * 1000) / rate;
      // A timer, not a spin: the leader's own timers and I/O must run in between. Its slack (about
      // a millisecond) only shifts when a row is written, not what is measured.
      const wait = due - monoMs();
      if (wait > 0) await sleep(wait);
      lateMs.push(monoMs() - due);
      const k = startN + i;
      const before = monoMs();
      const pending = d.execute(
        'insert into lag(n, at, v) values (?, ?, ?)',
        [k, before, valueFor(k, valueChars)],
        { durability },
      );
      const committed = monoMs();
      const { token } = await pending;
      tokens.push(token.seq);
      n.push(k);
      committedAt.push(committed);
      resolvedMs.push(monoMs() - before);
    }
    return { n, committedAt, resolvedMs, lateMs, tokens };
  },

  /**
   * Polls the local copy (consistency 'local') every `pollMs` for rows with n in
   * [fromN, toN] and records when each was first seen. Stops when toN was seen or at the timeout.
   */
  async watch({ fromN, toN, pollMs, timeoutMs }) {
    const d = database();
    const n: number[] = [];
    const visibleAt: number[] = [];
    const positions: number[] = [];
    let last = fromN - 1;
    let polls = 0;
    const deadline = monoMs() + timeoutMs;
    while (last < toN && monoMs() < deadline) {
      const { rows, position } = await d.query(
        'select n from lag where n > ? and n <= ? order by n',
        [last, toN],
        { consistency: 'local' },
      );
      const seen = monoMs();
      polls += 1;
      for (const row of rows) {
        const k = Number(row.n);
        n.push(k);
        visibleAt.push(seen);
        positions.push(position.seq);
        if (k > last) last = k;
      }
      if (last < toN) await sleep(pollMs);
    }
    return { n, visibleAt, positions, polls };
  },

  /**
   * `count` writes of the same statement one after the other, each timed on this process's
   * clock from the call to its resolution. From a follower they are forwarded to the leader.
   */
  async latency({ count, durability, valueChars, keyBase }) {
    const d = database();
    const ms: number[] = [];
    let role = d.role;
    for (let i = 0; i < count; i++) {
      const k = keyBase + i;
      const value = valueFor(k, valueChars);
      const before = monoMs();
      await d.execute('insert into fwd(k, v) values (?, ?)', [k, value], { durability });
      ms.push(monoMs() - before);
      if (d.role !== role) role = d.role;
      // Untimed: lets the node's timers and I/O run between writes, as between two requests (an
      // 'async' write on the leader resolves through microtasks only and would starve them).
      await new Promise((resolve) => setImmediate(resolve));
    }
    return { ms, role, position: d.position };
  },

  /**
   * `count` GETs of another node's unauthenticated /health route over one keep-alive connection,
   * one after the other: the floor of a node-to-node round trip (HTTP on loopback, both loops).
   */
  async httpPing({ address, count }) {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const ms: number[] = [];
    try {
      for (let i = 0; i < count; i++) {
        const before = monoMs();
        await new Promise<void>((resolve, reject) => {
          http
            .get(`${address}/health`, { agent }, (response) => {
              response.resume();
              response.on('end', resolve);
              response.on('error', reject);
            })
            .on('error', reject);
        });
        ms.push(monoMs() - before);
      }
    } finally {
      agent.destroy();
    }
    return { ms };
  },

  async storageCalls() {
    const calls = storageCalls;
    storageCalls = [];
    return { calls };
  },

  async close() {
    await node?.close();
    await leases?.close();
    node = undefined;
    db = undefined;
    return { closed: true };
  },
};

process.on('message', (message: { id: number; task: TaskName; args: never }) => {
  const run = tasks[message.task] as (args: unknown) => Promise<unknown>;
  run(message.args).then(
    (value) => process.send?.({ id: message.id, ok: true, value }),
    (error: unknown) =>
      process.send?.({
        id: message.id,
        ok: false,
        error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
      }),
  );
});

// The parent went away (crashed, killed): do not linger holding a lease.
process.on('disconnect', () => process.exit(0));
