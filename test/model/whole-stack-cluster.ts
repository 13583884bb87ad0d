/**
 * Real hadb nodes in this process for the whole-stack model: memory storage and leases with
 * fault injection, each node served over Hrana as `hadb serve` wires it, and the invariant checks
 * (a support module: vitest does not run it).
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { MemoryLeaseStore } from '../../src/adapters/lease/memory.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import type { ListOptions, StorageBackend } from '../../src/adapters/storage/types.ts';
import type { HadbDatabase } from '../../src/api-types.ts';
import { type HranaServer, startHranaServer } from '../../src/hrana/server.ts';
import type { LeaseTiming } from '../../src/machines/role.ts';
import { restoreDatabase } from '../../src/replication/restore.ts';
import { logKey, logPrefix } from '../../src/replication/snapshot.ts';
import { maskFollowerOwnedHeader } from '../../src/replication/sqlite/apply.ts';
import type { HostedDatabase } from '../../src/runtime/hosted-database.ts';
import { createNode, type HadbNode, type OpenOptions } from '../../src/runtime/node.ts';
import { type Changeset, decodeChangeset } from '../../src/wire/changeset.ts';
import { decodeLeaseRecord } from '../../src/wire/lease-record.ts';
import { RELAY_PATH } from '../../src/wire/node-protocol.ts';

export const DB = 'db';
export const SCHEMA = 'create table if not exists t(k text primary key, via text, x)';
/** Each migration adds one row the ledger knows by key. */
export const MIGRATIONS = Array.from(
  { length: 8 },
  (_, i) => `insert into t(k, via) values ('migration-${i + 1}', 'migrations')`,
);
const SECRET = 'whole-stack-model-secret-0123456789';

/** Short leases, so failovers fit in a run of a few hundred ms. */
export const TIMING: LeaseTiming = {
  ttlMs: 400,
  renewIntervalMs: 100,
  retryIntervalMs: 50,
  pollIntervalMs: 100,
  marginMs: 100,
};

/** An invariant the whole stack broke: the model fails with it. */
export class InvariantViolation extends Error {}

function violated(message: string): never {
  throw new InvariantViolation(message);
}

/**
 * Stalls of this process's event loop longer than any TTL: a writer busy-waiting in SQLite does
 * that, and every node in the process then loses its leases. Shared by every run at once.
 */
export const loopStalls: number[] = [];
const STALL_MS = 2500;
let lastTick = Date.now();
setInterval(() => {
  const now = Date.now();
  if (now - lastTick > STALL_MS) loopStalls.push(now - lastTick);
  lastTick = now;
}, 100).unref();

/** Turns a changeset stored by a node into the one really stored (teeth: a broken capture). */
export type StoredBodyHook = (key: string, body: Uint8Array) => Uint8Array;

/**
 * Every log object a node tried to store, so each stored changeset can be attributed to the
 * node whose bytes it holds (a write can land while its node never hears of it).
 */
interface Attempt {
  node: string;
  key: string;
  body: Uint8Array;
}

class RecordingStorage implements StorageBackend {
  constructor(
    readonly inner: StorageBackend,
    readonly node: string,
    readonly attempts: Attempt[],
    readonly hook: StoredBodyHook | undefined,
  ) {}
  #record(key: string, body: Uint8Array): Uint8Array {
    if (!key.includes('/log/')) return body;
    const stored = this.hook ? this.hook(key, body) : body;
    this.attempts.push({ node: this.node, key, body: stored });
    return stored;
  }
  put(key: string, body: Uint8Array) {
    return this.inner.put(key, this.#record(key, body));
  }
  putIfAbsent(key: string, body: Uint8Array) {
    return this.inner.putIfAbsent(key, this.#record(key, body));
  }
  get(key: string, range?: { start: number; end?: number }) {
    return this.inner.get(key, range);
  }
  list(prefix: string, options?: ListOptions) {
    return this.inner.list(prefix, options);
  }
  delete(keys: readonly string[]) {
    return this.inner.delete(keys);
  }
}

export interface ServedNode {
  id: string;
  node: HadbNode;
  db: HadbDatabase;
  hrana: HranaServer;
  /** What the Hrana server serves: the handle is replaced when the database is reopened. */
  served: Map<string, HadbDatabase>;
}

/** Page `n` (1-based) of an image. */
function pageOf(image: Buffer, pageSize: number, n: number): Buffer {
  return image.subarray((n - 1) * pageSize, n * pageSize);
}

/** Page numbers where `actual` differs from `expected`, page 1 without the follower-owned bytes. */
export function differingPages(expected: Buffer, actual: Buffer, pageSize: number): number[] {
  const pages = Math.max(expected.length, actual.length) / pageSize;
  const differing: number[] = [];
  for (let n = 1; n <= Math.ceil(pages); n++) {
    const a = pageOf(expected, pageSize, n);
    const b = pageOf(actual, pageSize, n);
    const same =
      n === 1
        ? Buffer.from(maskFollowerOwnedHeader(a)).equals(Buffer.from(maskFollowerOwnedHeader(b)))
        : a.equals(b);
    if (!same) differing.push(n);
  }
  return differing;
}

/** The rows of table t in a database image: key → x. */
export function rowsInImage(image: Buffer): Map<string, unknown> {
  if (image.length === 0) return new Map();
  const copy = Buffer.from(image);
  // Rollback mode: a deserialized image cannot use a WAL.
  copy[18] = 1;
  copy[19] = 1;
  const db = new Database(copy);
  try {
    // A lost index page leaves every row readable: only the b-tree check tells.
    const check = db.pragma('quick_check') as { quick_check: string }[];
    if (check.length !== 1 || check[0]?.quick_check !== 'ok') {
      throw new Error(`quick_check: ${check.map((row) => row.quick_check).join('; ')}`);
    }
    const exists = db.prepare("select 1 from sqlite_master where name = 't'").get();
    if (!exists) return new Map();
    const rows = db.prepare('select k, x from t').all() as { k: string; x: unknown }[];
    return new Map(rows.map((row) => [row.k, row.x]));
  } finally {
    db.close();
  }
}

export interface ClusterOptions {
  dir: string;
  nodes: number;
  hook?: StoredBodyHook | undefined;
  /** Whether a stalled event loop is a violation (default true). */
  checkStalls?: boolean;
}

/** What storage holds: the changesets in order and the database image after each. */
interface StoredLog {
  changesets: Changeset[];
  /** images[seq]: the database as of seq; images[0] is empty. */
  images: Buffer[];
  pageSize: number;
}

export class WholeStackCluster {
  readonly storage = new MemoryStorage();
  readonly leases: MemoryLeaseStore;
  readonly attempts: Attempt[] = [];
  /** Epoch → the nodes the lease store granted it to. */
  readonly grants = new Map<number, Set<string>>();
  readonly nodes: (ServedNode | null)[];
  readonly ids: string[];
  /** Nodes cut off because they were killed: healed when restarted. */
  readonly killed = new Set<string>();
  readonly parked: { node: string; file: string }[] = [];
  /** Keys of acknowledged `'replicated'` writes. */
  readonly acked = new Set<string>();
  /** Keys of acknowledged writes whose x was -0. */
  readonly signed = new Set<string>();
  /** Keys of transactions rolled back for sure: never in storage. */
  readonly rolledBack = new Set<string>();
  /** Violations seen outside a step (a write left running): the next check throws them. */
  readonly violations: string[] = [];
  readonly #decoded = new Map<string, Changeset>();
  /** Stored bytes by key (objects under log/ are write-once). */
  readonly #bodies = new Map<string, Uint8Array>();
  readonly #images: Buffer[] = [Buffer.alloc(0)];
  readonly #options: ClusterOptions;

  constructor(options: ClusterOptions) {
    this.#options = options;
    this.ids = Array.from({ length: options.nodes }, (_, i) => `n${i}`);
    this.nodes = this.ids.map(() => null);
    this.leases = new MemoryLeaseStore({
      onWrite: (write) => {
        if (write.key !== DB) return;
        const record = decodeLeaseRecord(write.value);
        if (record.released) return;
        const holders = this.grants.get(record.epoch) ?? new Set();
        holders.add(record.holder);
        this.grants.set(record.epoch, holders);
      },
    });
  }

  isUp(i: number): boolean {
    return this.nodes[i] !== null;
  }

  /** Starts node `i` as `hadb serve` does (a Hrana server relaying streams over the node's listener). */
  /** `withSchema`: opened as an application does, with the schema (run on the leader). */
  async start(i: number, withSchema = true): Promise<void> {
    const id = this.ids[i] as string;
    this.storage.faults.heal(id);
    this.leases.faults.heal(id);
    this.killed.delete(id);
    let hrana: HranaServer | undefined;
    const node = await createNode({
      id,
      secret: SECRET,
      dataDir: path.join(this.#options.dir, id),
      storage: new RecordingStorage(
        this.storage.forNode(id),
        id,
        this.attempts,
        this.#options.hook,
      ),
      leases: this.leases.forNode(id),
      timing: TIMING,
      hibernateAfterMs: 300,
      forwardTimeoutMs: 2000,
      readYourWritesTimeoutMs: 500,
      logger: pino({ level: 'silent' }),
      routes: {
        [RELAY_PATH]: {
          method: 'POST',
          authenticated: true,
          handle: async (request) =>
            hrana ? hrana.relay(request) : { status: 503, body: '{"code":"STARTING"}' },
        },
      },
    });
    try {
      const db = await this.#open(id, node, withSchema ? { schema: SCHEMA } : {});
      const served = new Map<string, HadbDatabase>([[DB, db]]);
      hrana = await startHranaServer({
        host: '127.0.0.1',
        port: 0,
        databases: served,
        authToken: null,
        secret: SECRET,
        self: node.address ?? '',
        leaderAddress: (name) =>
          node.status().databases.find((status) => status.name === name)?.leaderAddress ?? null,
        streamIdleMs: 2000,
      });
      this.nodes[i] = { id, node, db, hrana, served };
    } catch (error) {
      await node.close();
      throw error;
    }
  }

  async #open(id: string, node: HadbNode, options: OpenOptions): Promise<HadbDatabase> {
    const db = await node.open(DB, { ...options, timeoutMs: 3000 });
    db.on('parked', (tail) => this.parked.push({ node: id, file: tail.file }));
    return db;
  }

  /** Closes the database on node `i` and opens it again with the first `count` migrations. */
  async reopenWithMigrations(i: number, count: number): Promise<void> {
    const served = this.nodes[i] as ServedNode;
    await served.db.close();
    try {
      served.db = await this.#open(served.id, served.node, {
        schema: SCHEMA,
        migrations: MIGRATIONS.slice(0, count),
      });
    } catch (error) {
      // A failed open closes the database: open it plainly (no write: the schema is in) so the
      // node goes on hosting it. Cut off from storage, that fails too: the end reopens it.
      served.db = await this.#open(served.id, served.node, {}).catch(() => served.db);
      throw error;
    } finally {
      served.served.set(DB, served.db);
    }
  }

  /** A crash, as far as one process allows: cut off, then stopped without a word to anyone. */
  async kill(i: number): Promise<void> {
    const served = this.nodes[i] as ServedNode;
    this.nodes[i] = null;
    this.killed.add(served.id);
    this.storage.faults.cutOff(served.id, 'fail');
    this.leases.faults.cutOff(served.id, 'fail');
    await Promise.allSettled([served.hrana.close(), served.node.close()]);
  }

  /** A graceful stop: ships, releases its lease, hands over. */
  async close(i: number): Promise<void> {
    const served = this.nodes[i] as ServedNode;
    this.nodes[i] = null;
    await Promise.allSettled([served.hrana.close(), served.node.close()]);
  }

  partition(i: number, from: 'storage' | 'leases'): void {
    const id = this.ids[i] as string;
    (from === 'storage' ? this.storage : this.leases).faults.cutOff(id, 'fail');
  }

  heal(): void {
    for (const id of this.ids) {
      if (this.killed.has(id)) continue;
      this.storage.faults.heal(id);
      this.leases.faults.heal(id);
    }
  }

  leader(): ServedNode | null {
    const leaders = this.nodes.filter(
      (served): served is ServedNode => served?.db.writable === true,
    );
    return leaders.length === 1 ? (leaders[0] as ServedNode) : null;
  }

  async stop(): Promise<void> {
    await Promise.allSettled(
      this.nodes.map(
        (served) => served && Promise.all([served.hrana.close(), served.node.close()]),
      ),
    );
  }

  // ---- what storage holds ------------------------------------------------------------------------

  async #storedLog(): Promise<StoredLog> {
    const prefix = logPrefix('', DB);
    const keys: string[] = [];
    let startAfter: string | undefined;
    for (;;) {
      const options: ListOptions = startAfter === undefined ? {} : { startAfter };
      const page = await this.storage.list(prefix, options);
      keys.push(...page.objects.map((object) => object.key));
      if (page.nextStartAfter === undefined) break;
      startAfter = page.nextStartAfter;
    }
    const changesets: Changeset[] = [];
    for (const key of keys) {
      let changeset = this.#decoded.get(key);
      if (!changeset) {
        const body = await this.storage.get(key);
        if (!body) violated(`I2: ${key} was listed but cannot be read`);
        changeset = decodeChangeset(body, { db: DB });
        this.#decoded.set(key, changeset);
        this.#bodies.set(key, body);
      }
      changesets.push(changeset);
    }
    let pageSize = 4096;
    for (const [index, changeset] of changesets.entries()) {
      pageSize = changeset.pageSize;
      if (changeset.seq !== index + 1) {
        violated(`I2: the log has seq ${changeset.seq} at position ${index + 1} (a gap)`);
      }
      if (this.#images[changeset.seq] !== undefined) continue;
      const before = this.#images[changeset.seq - 1] as Buffer;
      const image = Buffer.alloc(changeset.dbSizePages * changeset.pageSize);
      before.copy(image, 0, 0, Math.min(before.length, image.length));
      for (const page of changeset.pages) {
        if (page.pgno <= changeset.dbSizePages) {
          image.set(page.data, (page.pgno - 1) * changeset.pageSize);
        }
      }
      this.#images[changeset.seq] = image;
    }
    return { changesets, images: this.#images.slice(0, changesets.length + 1), pageSize };
  }

  /**
   * The checks after every step: acknowledged writes are in storage, rolled-back ones never are;
   * epochs only grow along the log and each epoch's changesets come from one node; every
   * follower's copy is storage's image at its position, page for page.
   */
  async checkStep(): Promise<StoredLog> {
    if (this.violations.length > 0) violated(this.violations.join('\n'));
    if (loopStalls.length > 0 && this.#options.checkStalls !== false) {
      violated(
        `I8: the event loop stalled for ${loopStalls.join(', ')} ms (every lease on it lapses)`,
      );
    }
    const log = await this.#storedLog();
    this.#checkEpochs(log);
    const tip = log.images[log.images.length - 1] as Buffer;
    let stored: Map<string, unknown>;
    try {
      stored = rowsInImage(tip);
    } catch (error) {
      violated(`I7: storage's image at seq ${log.changesets.length} is damaged: ${error}`);
    }
    const missing = [...this.acked].filter((key) => !stored.has(key));
    if (missing.length > 0) {
      violated(
        `I3: acknowledged 'replicated' writes not in storage at seq ${log.changesets.length}: ${missing.join(', ')}`,
      );
    }
    const changed = [...this.signed].filter((key) => !Object.is(stored.get(key), -0));
    if (changed.length > 0) {
      violated(
        `V: values written as -0 are stored otherwise: ${changed.map((key) => `${key}=${stored.get(key)}`).join(', ')}`,
      );
    }
    const ghosts = [...this.rolledBack].filter((key) => stored.has(key));
    if (ghosts.length > 0) violated(`I7: rolled-back writes in storage: ${ghosts.join(', ')}`);
    this.#noCopyCannotFollow();
    for (const served of this.nodes) {
      if (served?.db.role === 'follower') this.#checkCopy(served, log, false);
    }
    return log;
  }

  /**
   * Storage here is always readable in the end: a copy that cannot follow it found storage and
   * itself disagreeing (the database checksum), which is I7 reported, not a liveness lag.
   */
  #noCopyCannotFollow(): void {
    for (const served of this.nodes) {
      const problem = served?.db.problem;
      if (served && problem) {
        violated(
          `I7: the copy on ${served.id} cannot follow storage at seq ${problem.seq}: ${problem.code} ${problem.message}`,
        );
      }
    }
  }

  #checkEpochs(log: StoredLog): void {
    let epoch = 0;
    for (const changeset of log.changesets) {
      if (changeset.epoch < epoch) {
        violated(`I2: seq ${changeset.seq} has epoch ${changeset.epoch} after epoch ${epoch}`);
      }
      epoch = changeset.epoch;
    }
    const writers = new Map<number, Set<string>>();
    for (const changeset of log.changesets) {
      const key = logKey('', DB, changeset.seq);
      const body = this.#bodies.get(key) as Uint8Array;
      const nodes = writers.get(changeset.epoch) ?? new Set<string>();
      for (const attempt of this.attempts) {
        if (attempt.key === key && Buffer.from(attempt.body).equals(Buffer.from(body))) {
          nodes.add(attempt.node);
        }
      }
      writers.set(changeset.epoch, nodes);
    }
    for (const [e, nodes] of writers) {
      if (nodes.size > 1)
        violated(`I1: nodes ${[...nodes].join(', ')} all committed in epoch ${e}`);
      const granted = this.grants.get(e);
      if (granted && granted.size > 1) {
        violated(`I1: the lease of epoch ${e} went to ${[...granted].join(', ')}`);
      }
      const [writer] = nodes;
      if (writer && granted && !granted.has(writer)) {
        violated(`I1: ${writer} committed in epoch ${e}, which the lease gave to ${[...granted]}`);
      }
    }
  }

  /** Storage's image at the copy's position, page for page (a leader's file checkpointed first). */
  #checkCopy(served: ServedNode, log: StoredLog, leader: boolean): void {
    const hosted = served.db as HostedDatabase;
    const seq = served.db.position.seq;
    if (seq === 0) return;
    const expected = log.images[seq];
    if (expected === undefined) {
      violated(`I7: ${served.id} is at seq ${seq}, past storage's ${log.changesets.length}`);
    }
    if (!fs.existsSync(hosted.path)) return;
    const actual = fs.readFileSync(hosted.path);
    const differing = differingPages(expected, actual, log.pageSize);
    if (differing.length > 0) {
      violated(
        `I7: the ${leader ? 'leader' : 'follower'} copy on ${served.id} differs from storage at seq ${seq} in pages ${differing.join(', ')} (${actual.length} vs ${expected.length} bytes)`,
      );
    }
  }

  // ---- the end -----------------------------------------------------------------------------------

  /**
   * Heals everything, restarts every node, lets them converge, then checks every copy (the
   * leader's too) against storage, storage against the project's own restore, and that every
   * acknowledged write is in every copy.
   */
  async settleAndCheck(dir: string, timeoutMs = 15_000): Promise<void> {
    this.heal();
    for (const [i] of this.nodes.entries()) if (!this.isUp(i)) await this.start(i, false);
    // A database whose reopen failed (cut off at the time) is opened again, as an app would.
    for (const served of this.nodes) {
      if (served && served.db.role === 'stopped') {
        served.db = await this.#open(served.id, served.node, {});
        served.served.set(DB, served.db);
      }
    }
    const deadline = Date.now() + timeoutMs;
    const waitUntil = async (what: string, ok: () => boolean | Promise<boolean>) => {
      while (!(await ok())) {
        this.#noCopyCannotFollow();
        if (Date.now() > deadline) {
          violated(`liveness: ${what} within ${timeoutMs} ms after healing\n${this.describe()}`);
        }
        await sleep(20);
      }
    };
    // A write after healing, which every copy must reach; a leader losing its lease while it
    // commits is no failure of the run: the write goes to the next one (idempotent).
    let settledOn: ServedNode | null = null;
    await waitUntil('a write after healing to be acknowledged', async () => {
      settledOn = this.leader();
      if (!settledOn) return false;
      try {
        await settledOn.db.execute('insert or replace into t(k, via) values (?, ?)', [
          'settled',
          'end',
        ]);
        return true;
      } catch {
        return false;
      }
    });
    this.acked.add('settled');
    const leader = settledOn as unknown as ServedNode;
    const target = leader.db.position.seq;
    await waitUntil('every copy to reach the last write', () =>
      this.nodes.every((served) => served !== null && served.db.position.seq >= target),
    );
    // Checkpointed and closed: the leader's file alone is then everything it committed.
    await waitUntil('the leader to ship everything and hibernate', () =>
      (leader.db as HostedDatabase).hibernate(),
    );
    for (const served of this.nodes) (served?.db as HostedDatabase | undefined)?.hibernate();
    const log = await this.checkStep();
    for (const served of this.nodes) {
      if (served) this.#checkCopy(served, log, served === leader);
    }
    const tip = log.images[log.images.length - 1] as Buffer;
    const restored = path.join(dir, `restored-${Date.now()}.db`);
    await restoreDatabase({ storage: this.storage, prefix: '', db: DB, destPath: restored });
    const differing = differingPages(tip, fs.readFileSync(restored), log.pageSize);
    if (differing.length > 0) violated(`restore differs from the log in pages ${differing}`);
    for (const served of this.nodes) {
      const rows = await (served as ServedNode).db.all('select k from t');
      const keys = new Set(rows.map((row) => String(row.k)));
      const missing = [...this.acked].filter((key) => !keys.has(key));
      if (missing.length > 0) {
        violated(`I3: ${served?.id} misses acknowledged writes ${missing.join(', ')}`);
      }
    }
  }

  describe(): string {
    return this.nodes
      .map((served, i) =>
        served
          ? `${served.id}: ${served.db.role} writable=${served.db.writable} at ${JSON.stringify(served.db.position)} in transaction=${(served.db as HostedDatabase).inTransaction} problem=${served.db.problem ? `${served.db.problem.code} ${served.db.problem.message}` : 'none'}`
          : `${this.ids[i]}: down${this.killed.has(this.ids[i] as string) ? ' (killed)' : ''}`,
      )
      .join('; ');
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
