/**
 * The whole-stack model's commands: every public write path and every role event, over the real
 * nodes of a {@link WholeStackCluster} (a support module: vitest does not run it).
 */
import fc from 'fast-check';
import { HadbError, SqlError } from '../../src/errors.ts';
import type { HostedDatabase } from '../../src/runtime/hosted-database.ts';
import {
  MIGRATIONS,
  type ServedNode,
  sleep,
  TIMING,
  type WholeStackCluster,
} from './whole-stack-cluster.ts';

export interface Model {
  up: boolean[];
}

export interface Real {
  cluster: WholeStackCluster;
  /** Writes left running while the next commands go on. */
  inflight: Promise<void>[];
  nextKey: number;
  migrations: number;
  /** Commands and checks left out (`signed-zero`: whether -0 must come back as -0). */
  without: ReadonlySet<string>;
}

/** How often each command and event really ran (and how writes ended), over all runs. */
export const coverage: Record<string, number> = {};
export function count(name: string): void {
  coverage[name] = (coverage[name] ?? 0) + 1;
}

export const WRITE_PATHS = [
  'execute',
  'batch',
  'transaction',
  'begin-commit',
  'begin-rollback',
  'migrations',
  'hrana-pipeline',
  'hrana-stream-commit',
  'hrana-stream-rollback',
] as const;
export const ROLE_EVENTS = [
  'kill',
  'restart',
  'close',
  'handoff',
  'hibernate',
  'partition-storage',
  'partition-leases',
  'heal',
  'wait',
] as const;
export type CommandName = (typeof WRITE_PATHS)[number] | (typeof ROLE_EVENTS)[number];

type Command = fc.AsyncCommand<Model, Real>;

/** A write's target meaning whichever node leads when it runs (any up node if none does). */
const LEADER = -1;

function up(real: Real, node: number): ServedNode {
  return real.cluster.nodes[node] as ServedNode;
}

function newKey(real: Real, path: string): string {
  real.nextKey += 1;
  return `${path}-${real.nextKey}`;
}

const insert = 'insert into t(k, via) values (?, ?)';
/** Library writes carry -0 too: values must round-trip exactly, forwarded or not. */
const insertSigned = 'insert into t(k, via, x) values (?, ?, ?)';

// ---- Hrana over HTTP, as a libSQL client sends it ------------------------------------------------

interface HranaResult {
  type: 'ok' | 'error';
  response?: { type: string; result?: { step_errors?: (unknown | null)[] } };
  error?: { message: string };
}

async function pipeline(
  served: ServedNode,
  baton: string | null,
  requests: unknown[],
): Promise<{ baton: string | null; results: HranaResult[] }> {
  const response = await fetch(`${served.hrana.address}/v3/pipeline`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ baton, requests }),
    signal: AbortSignal.timeout(3000),
  });
  const body = (await response.json()) as { baton: string | null; results?: HranaResult[] };
  if (!response.ok || !body.results) throw new Error(`hrana ${response.status}`);
  return { baton: body.baton, results: body.results };
}

function hranaOk(result: HranaResult | undefined): boolean {
  if (result?.type !== 'ok') return false;
  return (result.response?.result?.step_errors ?? []).every((error) => error === null);
}

const text = (value: string) => ({ type: 'text', value });
const executeRequest = (sql: string, args: string[] = []) => ({
  type: 'execute',
  stmt: { sql, args: args.map(text) },
});

// ---- writes ----------------------------------------------------------------------------------------

/** One write through one path; `background` leaves it running under the next commands. */
class Write implements Command {
  constructor(
    readonly path: (typeof WRITE_PATHS)[number],
    readonly node: number,
    readonly background: boolean,
  ) {}
  check = (m: Model) => m.up[this.node] === true || (this.node === LEADER && m.up.includes(true));
  async run(_: Model, real: Real) {
    const served =
      this.node === LEADER
        ? (real.cluster.leader() ?? (real.cluster.nodes.find((n) => n !== null) as ServedNode))
        : up(real, this.node);
    if ((served.db as HostedDatabase).hibernated) count('wake');
    const work = this.#write(real, served).then(
      (acked) => count(`${this.path}:${acked ? 'acked' : 'refused'}`),
      (error: unknown) => {
        count(`${this.path}:failed`);
        // Faults explain a refused or unconfirmed write, never SQLite refusing valid SQL (a
        // write applied twice would meet its own unique key), nor an error without a code.
        if (error instanceof SqlError) {
          real.cluster.violations.push(`W: ${this} was refused as SQL: ${error.message}`);
        } else if (!this.path.startsWith('hrana') && !(error instanceof HadbError)) {
          real.cluster.violations.push(`W: ${this} failed with an untyped error: ${error}`);
        }
        if (process.env.HADB_MODEL_DEBUG) console.error(`${this}: ${error}`);
      },
    );
    count(this.path);
    // An open replaces the node's handle: never two at once on one node.
    if (this.background && this.path !== 'migrations') real.inflight.push(work);
    else await work;
  }

  /** True when acknowledged (its keys then go in the ledger). */
  async #write(real: Real, served: ServedNode): Promise<boolean> {
    const { cluster } = real;
    const db = served.db;
    switch (this.path) {
      case 'execute': {
        const key = newKey(real, 'execute');
        await db.execute(insertSigned, [key, this.path, -0], { durability: 'replicated' });
        cluster.acked.add(key);
        if (!real.without.has('signed-zero')) cluster.signed.add(key);
        return true;
      }
      case 'batch': {
        const keys = [newKey(real, 'batch'), newKey(real, 'batch')];
        await db.batch(
          keys.map((key) => ({ sql: insertSigned, params: [key, this.path, -0] })),
          { durability: 'replicated' },
        );
        for (const key of keys) {
          cluster.acked.add(key);
          if (!real.without.has('signed-zero')) cluster.signed.add(key);
        }
        return true;
      }
      case 'transaction': {
        const key = newKey(real, 'transaction');
        if (db.role !== 'leader') return false;
        await db.transaction((tx) => tx.execute(insertSigned, [key, this.path, -0]), {
          durability: 'replicated',
        });
        cluster.acked.add(key);
        if (!real.without.has('signed-zero')) cluster.signed.add(key);
        return true;
      }
      case 'begin-commit':
      case 'begin-rollback': {
        const key = newKey(real, this.path);
        if (db.role !== 'leader') return false;
        const tx = await db.begin({ waitMs: 500 });
        const commit = this.path === 'begin-commit';
        if (!commit) cluster.rolledBack.add(key);
        try {
          tx.run({ sql: insertSigned, params: [key, this.path, -0] }, false);
          // Across an await, as an application holding it over I/O would.
          await sleep(1);
          if (!commit) {
            tx.rollback();
            return true;
          }
          await tx.commit();
          cluster.acked.add(key);
          if (!real.without.has('signed-zero')) cluster.signed.add(key);
          return true;
        } finally {
          tx.abort('the model is done with it');
        }
      }
      case 'migrations': {
        if (real.migrations >= MIGRATIONS.length) return false;
        const count = real.migrations + 1;
        real.migrations = count;
        await cluster.reopenWithMigrations(cluster.nodes.indexOf(served), count);
        for (let i = 1; i <= count; i++) cluster.acked.add(`migration-${i}`);
        return true;
      }
      case 'hrana-pipeline': {
        const keys = [newKey(real, 'hrana'), newKey(real, 'hrana')];
        const { results } = await pipeline(served, null, [
          executeRequest(insert, [keys[0] as string, 'hrana-execute']),
          {
            type: 'batch',
            batch: {
              steps: [{ stmt: { sql: insert, args: [text(keys[1] as string), text('b')] } }],
            },
          },
          { type: 'close' },
        ]);
        let acked = false;
        for (const [i, key] of keys.entries()) {
          if (hranaOk(results[i])) {
            cluster.acked.add(key);
            acked = true;
          }
        }
        return acked;
      }
      case 'hrana-stream-commit':
      case 'hrana-stream-rollback': {
        const key = newKey(real, 'stream');
        const commit = this.path === 'hrana-stream-commit';
        const first = await pipeline(served, null, [
          executeRequest('BEGIN'),
          executeRequest(insert, [key, this.path]),
        ]);
        const begun = hranaOk(first.results[0]);
        if (!begun) {
          // The insert then ran on its own, an autocommit write like any other.
          if (hranaOk(first.results[1])) cluster.acked.add(key);
          return false;
        }
        if (!commit) cluster.rolledBack.add(key);
        await sleep(1);
        const second = await pipeline(served, first.baton, [
          executeRequest(commit ? 'COMMIT' : 'ROLLBACK'),
          { type: 'close' },
        ]);
        if (commit && hranaOk(first.results[1]) && hranaOk(second.results[0])) {
          cluster.acked.add(key);
          return true;
        }
        return !commit;
      }
    }
  }
  toString = () =>
    `${this.path}(${this.node === LEADER ? 'leader' : `n${this.node}`}${this.background && this.path !== 'migrations' ? ', background' : ''})`;
}

// ---- role events -------------------------------------------------------------------------------------

class Kill implements Command {
  constructor(readonly node: number) {}
  check = (m: Model) => m.up[this.node] === true;
  async run(m: Model, real: Real) {
    m.up[this.node] = false;
    await real.cluster.kill(this.node);
    count('kill');
  }
  toString = () => `kill(n${this.node})`;
}

class Close implements Command {
  constructor(readonly node: number) {}
  check = (m: Model) => m.up[this.node] === true;
  async run(m: Model, real: Real) {
    m.up[this.node] = false;
    await real.cluster.close(this.node);
    count('close');
  }
  toString = () => `close(n${this.node})`;
}

class Restart implements Command {
  constructor(readonly node: number) {}
  check = (m: Model) => m.up[this.node] === false;
  async run(m: Model, real: Real) {
    try {
      await real.cluster.start(this.node);
      m.up[this.node] = true;
      count('restart');
    } catch {
      // Its open timed out (no leader within 3 s): it stays down; the end restarts it.
      count('restart:failed');
    }
  }
  toString = () => `restart(n${this.node})`;
}

class Handoff implements Command {
  /** `node`: a node, or {@link LEADER} for whichever leads. */
  constructor(readonly node: number) {}
  check = (m: Model) => m.up[this.node] === true || (this.node === LEADER && m.up.includes(true));
  async run(_: Model, real: Real) {
    const served = this.node === LEADER ? real.cluster.leader() : up(real, this.node);
    if (served?.db.role !== 'leader') return;
    served.db.handoff();
    count('handoff');
  }
  toString = () => `handoff(${this.node === LEADER ? 'leader' : `n${this.node}`})`;
}

class Hibernate implements Command {
  constructor(readonly node: number) {}
  check = (m: Model) => m.up[this.node] === true;
  async run(_: Model, real: Real) {
    // The next read, write or apply wakes it.
    if ((up(real, this.node).db as HostedDatabase).hibernate()) count('hibernate');
  }
  toString = () => `hibernate(n${this.node})`;
}

class Partition implements Command {
  constructor(
    readonly node: number,
    readonly from: 'storage' | 'leases',
  ) {}
  check = (m: Model) => m.up[this.node] === true;
  async run(_: Model, real: Real) {
    real.cluster.partition(this.node, this.from);
    count(`partition-${this.from}`);
  }
  toString = () => `partition(n${this.node}, ${this.from})`;
}

class Heal implements Command {
  check = () => true;
  async run(_: Model, real: Real) {
    real.cluster.heal();
    count('heal');
  }
  toString = () => 'heal';
}

class Wait implements Command {
  constructor(readonly ms: number) {}
  check = () => true;
  async run() {
    await sleep(this.ms);
    count('wait');
  }
  toString = () => `wait(${this.ms})`;
}

/** Every command, minus those named in `without` (to develop around a known bug). */
export function wholeStackCommands(nodes: number, without: ReadonlySet<string>) {
  const node = fc.nat({ max: nodes - 1 });
  const target = fc.oneof(node, fc.constant(LEADER));
  const writes = WRITE_PATHS.filter((path) => !without.has(path)).map((path) =>
    fc
      .tuple(target, fc.boolean())
      .map(([n, background]) => new Write(path, n, background) as Command),
  );
  const events: [CommandName, fc.Arbitrary<Command>][] = [
    ['kill', node.map((n) => new Kill(n))],
    // Several times: a node must be down first, so most draws would do nothing.
    ['restart', node.map((n) => new Restart(n))],
    ['restart', node.map((n) => new Restart(n))],
    ['restart', node.map((n) => new Restart(n))],
    ['close', node.map((n) => new Close(n))],
    ['handoff', target.map((n) => new Handoff(n))],
    ['hibernate', node.map((n) => new Hibernate(n))],
    ['partition-storage', node.map((n) => new Partition(n, 'storage'))],
    ['partition-leases', node.map((n) => new Partition(n, 'leases'))],
    ['heal', fc.constant(new Heal())],
    ['wait', fc.integer({ min: 20, max: TIMING.ttlMs * 2 }).map((ms) => new Wait(ms))],
  ];
  return [...writes, ...events.filter(([name]) => !without.has(name)).map(([, arb]) => arb)];
}
