/**
 * One hadb node in its own process, driven over stdio by `hadb demo`, the failover tests and the
 * failover benchmark. It opens its databases on the shared cluster folder (fs storage and fs
 * leases), runs a write load, and reports on stdout, one JSON object a line, every acknowledged
 * write, every role change, every parked tail and every failed write. It takes commands on stdin,
 * one JSON object a line (see {@link WorkerCommand}).
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import readline from 'node:readline';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { createFsLeaseStore } from '../adapters/lease/fs.ts';
import { createFsStorage } from '../adapters/storage/fs.ts';
import { openLeaseStoreFromUrl, openStorageFromUrl } from '../adapters/url.ts';
import type { Consistency, Durability, HadbDatabase, Role, WriteToken } from '../api-types.ts';
import { messageOf } from '../error-message.ts';
import type { LeaseTiming } from '../machines/role.ts';
import { createNode } from '../runtime/node.ts';
import { type ObserveFlags, observeOptions } from './observe.ts';

export const KV_SCHEMA =
  'create table if not exists kv(k text primary key, writer text not null, at integer not null)';
/**
 * `at` is the leader's wall clock when the row is written, inside the committing transaction:
 * followers compare it with their own clock to measure replication lag (same host, same clock).
 */
const INSERT =
  "insert into kv(k, writer, at) values (?, ?, cast(unixepoch('subsec') * 1000 as integer))";

/** Where the nodes of one cluster folder keep the shared storage and leases. */
export function clusterPaths(clusterDir: string): { storage: string; leases: string } {
  return {
    storage: path.join(clusterDir, 'storage'),
    leases: path.join(clusterDir, 'leases.sqlite'),
  };
}

export interface WorkerOptions {
  id: string;
  clusterDir: string;
  dataDir: string;
  dbs: string[];
  /** Backends by URL; the cluster folder's storage and lease file when absent. */
  storageUrl?: string;
  leasesUrl?: string;
  secret: string;
  timing: LeaseTiming;
  durability: Durability;
  /** Writes in flight per database. */
  concurrency: number;
  /** Writes per second per database from this node; 0 for as fast as the writes complete. */
  rate: number;
  /** Start writing at once (otherwise on `start-load`). */
  load: boolean;
  forwardTimeoutMs: number;
  /** How often a status line is printed; 0 for never. */
  statusIntervalMs: number;
  /** Distinguishes the keys of a restarted node from those of its earlier runs. */
  incarnation: string;
  /** `--transitions`, `--inspect`, `--inspect-url`. */
  observe?: ObserveFlags;
}

export type WorkerCommand =
  | { cmd: 'start-load' }
  | { cmd: 'stop-load' }
  | { cmd: 'report'; id?: number; keys?: boolean }
  | { cmd: 'handoff' }
  | { cmd: 'exit' };

export type WorkerMessage =
  | { type: 'ready'; node: string; pid: number; address: string | null; at: number }
  | { type: 'role'; node: string; db: string; role: Role; epoch: number | null; at: number }
  | { type: 'ack'; node: string; db: string; key: string; token: WriteToken; at: number }
  | {
      type: 'write-failed';
      node: string;
      db: string;
      key: string;
      code: string;
      message: string;
      at: number;
    }
  | {
      type: 'parked';
      node: string;
      db: string;
      file: string;
      epoch: number;
      afterSeq: number;
      pages: number;
      at: number;
    }
  | { type: 'problem'; node: string; db: string; message: string; at: number }
  | {
      type: 'status';
      node: string;
      db: string;
      role: Role;
      position: WriteToken;
      acked: number;
      failed: number;
      at: number;
    }
  /** Replication lag samples in ms, see {@link probeLag}. */
  | { type: 'lag'; node: string; db: string; samples: number[]; at: number }
  | {
      type: 'report';
      id: number | null;
      node: string;
      db: string;
      role: Role;
      position: WriteToken;
      rowCount: number;
      contentHash: string;
      keys?: string[];
      at: number;
    }
  | { type: 'load-stopped'; node: string; at: number }
  | { type: 'handoff'; node: string; db: string; epoch: number; at: number }
  | { type: 'exited'; node: string; at: number }
  | { type: 'fatal'; node: string; message: string; at: number };

/** Pipes to a parent are written synchronously on Linux, so a line printed is a line delivered. */
function print(message: WorkerMessage): void {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

/** The node could not start or run on: said on stdout for the driver, in full on stderr. */
export function reportFatal(node: string, error: unknown): void {
  print({ type: 'fatal', node, message: messageOf(error), at: Date.now() });
  process.stderr.write(
    `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
}

function errorCode(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERROR';
}

interface DatabaseState {
  db: HadbDatabase;
  acked: number;
  failed: number;
  /** Epoch of the latest leadership this node reported for the database. */
  leaderEpoch: number | null;
  lagSamples: number[];
  /** When the next write of this database's load may start (`performance.now()`). */
  nextSlot: number;
}

export async function runWorker(options: WorkerOptions): Promise<void> {
  const node = options.id;
  const paths = clusterPaths(options.clusterDir);
  const leases = options.leasesUrl
    ? await openLeaseStoreFromUrl(options.leasesUrl)
    : createFsLeaseStore({ path: paths.leases });
  const storage = options.storageUrl
    ? await openStorageFromUrl(options.storageUrl)
    : createFsStorage({ root: paths.storage });
  const observing = options.observe
    ? await observeOptions(options.observe, options.dbs)
    : { options: {}, stop: () => {} };
  const hadb = await createNode({
    ...observing.options,
    id: node,
    secret: options.secret,
    dataDir: options.dataDir,
    storage,
    leases,
    timing: options.timing,
    durability: options.durability,
    forwardTimeoutMs: options.forwardTimeoutMs,
  });

  const states = new Map<string, DatabaseState>();
  for (const name of options.dbs) {
    const opening = hadb.open(name, { schema: KV_SCHEMA });
    // The handle exists as soon as `open` is called: listening now catches the first election and
    // a tail parked while the copy is bootstrapped.
    const early = hadb.databases().find((candidate) => candidate.name === name);
    const state: Partial<DatabaseState> = {
      acked: 0,
      failed: 0,
      leaderEpoch: null,
      lagSamples: [],
      nextSlot: 0,
    };
    const listen = (db: HadbDatabase) => {
      db.on('role', ({ role, epoch }) => {
        if (role === 'leader') state.leaderEpoch = epoch;
        print({ type: 'role', node, db: name, role, epoch, at: Date.now() });
      });
      db.on('parked', (tail) => print({ type: 'parked', node, db: name, ...tail, at: Date.now() }));
      db.on('problem', (error) =>
        print({ type: 'problem', node, db: name, message: error.message, at: Date.now() }),
      );
    };
    if (early) listen(early);
    const db = await opening;
    if (!early) {
      listen(db);
      print({ type: 'role', node, db: name, role: db.role, epoch: null, at: Date.now() });
    }
    state.db = db;
    states.set(name, state as DatabaseState);
  }

  let closing = false;
  let loadOn = false;
  let loops: Promise<void>[] = [];
  let counter = 0;

  /** Spaces the writes of all loops of one database `1000 / rate` ms apart. */
  async function waitForSlot(state: DatabaseState): Promise<void> {
    if (options.rate <= 0) return;
    const now = performance.now();
    const slot = Math.max(now, state.nextSlot);
    state.nextSlot = slot + 1000 / options.rate;
    if (slot > now) await sleep(slot - now);
  }

  async function writeLoop(state: DatabaseState): Promise<void> {
    const name = state.db.name;
    while (loadOn) {
      // An async write on the leader never leaves the microtask queue: without a turn of the event
      // loop, the lease renewals and the shipping this load is meant to exercise would starve.
      await nextTurn();
      await waitForSlot(state);
      if (!loadOn) return;
      counter += 1;
      const key = `${node}-${options.incarnation}-${counter}`;
      try {
        const { token } = await state.db.execute(INSERT, [key, node]);
        state.acked += 1;
        print({ type: 'ack', node, db: name, key, token, at: Date.now() });
      } catch (error) {
        state.failed += 1;
        print({
          type: 'write-failed',
          node,
          db: name,
          key,
          code: errorCode(error),
          message: messageOf(error),
          at: Date.now(),
        });
        // A write fails after the leader stayed unreachable for a while: no need to hammer.
        await sleep(50);
      }
    }
  }

  function startLoad(): void {
    if (loadOn) return;
    loadOn = true;
    loops = [...states.values()].flatMap((state) =>
      Array.from({ length: options.concurrency }, () => writeLoop(state)),
    );
  }

  async function stopLoad(): Promise<void> {
    loadOn = false;
    await Promise.all(loops);
    loops = [];
  }

  /**
   * Follower lag: the time from the leader writing a row (`at`, its clock) to this node's first
   * local read that returns it (this node's clock; every node of a demo runs on one host). The
   * copy is re-read whenever its position moves, checked every 5 ms, so a sample overstates the
   * lag by at most that. Rows are found by rowid, which grows in commit order; rows present when
   * the probe starts (a restarted node's bootstrap) are not samples, and neither are rows seen
   * while this node leads (its own commits) or is between roles.
   */
  async function probeLag(state: DatabaseState): Promise<void> {
    const db = state.db;
    // Read-your-writes: the copy has applied this node's own `create table` before the first read.
    const maxRowid = async (consistency: Consistency) =>
      Number(
        (await db.get('select coalesce(max(rowid), 0) as r from kv', [], { consistency }))?.r ?? 0,
      );
    let cursor: number | null = null;
    let seen = -1;
    while (!closing) {
      await sleep(5);
      const position = db.position.seq;
      if (position === seen) continue;
      seen = position;
      try {
        if (cursor === null) {
          cursor = await maxRowid('read-your-writes');
          continue;
        }
        const role = db.role;
        const rows = await db.all('select rowid as r, at from kv where rowid > ? order by rowid', [
          cursor,
        ]);
        const now = Date.now();
        for (const row of rows) {
          cursor = Number(row.r);
          if (role === 'follower' || role === 'catching-up') {
            state.lagSamples.push(now - Number(row.at));
          }
        }
        // A copy rebuilt from storage can end below the cursor (a parked tail dropped rows).
        if (rows.length === 0) cursor = Math.min(cursor, await maxRowid('local'));
      } catch {
        // The copy is being swapped (a role change): the next move reads it again.
        seen = -1;
      }
    }
  }

  async function report(id: number | null, withKeys: boolean): Promise<void> {
    for (const [name, { db }] of states) {
      const { rows, position } = await db.query('select k, writer from kv order by k');
      const hash = createHash('sha256');
      for (const row of rows) hash.update(`${String(row.k)}\t${String(row.writer)}\n`);
      print({
        type: 'report',
        id,
        node,
        db: name,
        role: db.role,
        position,
        rowCount: rows.length,
        contentHash: hash.digest('hex'),
        ...(withKeys ? { keys: rows.map((row) => String(row.k)) } : {}),
        at: Date.now(),
      });
    }
  }

  async function exit(): Promise<never> {
    if (!closing) {
      closing = true;
      if (statusTimer) clearInterval(statusTimer);
      clearInterval(lagTimer);
      await Promise.race([stopLoad(), sleep(2000)]);
      loadOn = false;
      await hadb.close();
      observing.stop();
      await leases.close?.();
      await storage.close?.();
      print({ type: 'exited', node, at: Date.now() });
    }
    process.exit(0);
  }

  const statusTimer =
    options.statusIntervalMs > 0
      ? setInterval(() => {
          for (const [name, state] of states) {
            print({
              type: 'status',
              node,
              db: name,
              role: state.db.role,
              position: state.db.position,
              acked: state.acked,
              failed: state.failed,
              at: Date.now(),
            });
          }
        }, options.statusIntervalMs)
      : undefined;
  const lagTimer = setInterval(() => {
    for (const [name, state] of states) {
      if (state.lagSamples.length === 0) continue;
      print({ type: 'lag', node, db: name, samples: state.lagSamples, at: Date.now() });
      state.lagSamples = [];
    }
  }, 1000);

  async function handle(command: WorkerCommand): Promise<void> {
    switch (command.cmd) {
      case 'start-load':
        startLoad();
        return;
      case 'stop-load':
        await stopLoad();
        print({ type: 'load-stopped', node, at: Date.now() });
        return;
      case 'report':
        await report(command.id ?? null, command.keys === true);
        return;
      case 'handoff':
        for (const [name, state] of states) {
          if (state.db.role !== 'leader') continue;
          state.db.handoff();
          print({ type: 'handoff', node, db: name, epoch: state.leaderEpoch ?? 0, at: Date.now() });
        }
        return;
      case 'exit':
        await exit();
    }
  }

  const input = readline.createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (line.trim() === '') return;
    let command: WorkerCommand;
    try {
      command = JSON.parse(line) as WorkerCommand;
    } catch {
      print({ type: 'problem', node, db: '', message: `not JSON: ${line}`, at: Date.now() });
      return;
    }
    handle(command).catch((error: unknown) =>
      print({ type: 'problem', node, db: '', message: messageOf(error), at: Date.now() }),
    );
  });
  // The driver went away: nobody reads what this node reports any more.
  input.on('close', () => void exit());
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => void exit());

  print({
    type: 'ready',
    node,
    pid: process.pid,
    address: hadb.address ?? null,
    at: Date.now(),
  });
  for (const state of states.values()) void probeLag(state);
  if (options.load) startLoad();
}
