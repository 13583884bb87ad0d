import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type ChangedPage,
  type Changeset,
  decodeChangeset,
  encodeChangeset,
} from '../../src/wire/changeset.ts';
import { modelRunParameters } from './parameters.ts';
import {
  DB,
  InvariantViolation,
  loopStalls,
  SCHEMA,
  type StoredBodyHook,
  sleep,
  WholeStackCluster,
} from './whole-stack-cluster.ts';
import {
  type CommandName,
  count,
  coverage,
  type Model,
  type Real,
  wholeStackCommands,
} from './whole-stack-commands.ts';

/**
 * The whole stack, end to end: real nodes in this process (memory storage and leases with fault
 * injection, 400 ms leases), written to through every public path (execute, batch,
 * transaction(fn), begin/commit/rollback, open with migrations, Hrana pipelines and interactive
 * streams) while they are killed, restarted, closed, handed off, hibernated and cut off from
 * storage or leases. After every step: each acknowledged 'replicated' write is in storage, no
 * rolled-back one is, epochs only grow along the log and each epoch's changesets come from the
 * one node its lease went to, every follower's copy is storage's image at its position, page
 * for page, storage's image passes quick_check, -0 written through the library is stored as -0,
 * no valid write is refused as SQL or fails without an error code, and the event loop never
 * stalls past any TTL. At the end, after healing: the same for every copy, the leader's
 * included, and the project's restore gives storage's image. Hrana is served as `hadb serve`
 * wires it (startHranaServer, its relay on the node's listener), over HTTP on 127.0.0.1.
 *
 * Replay a failure: HADB_MODEL_SEED=<seed> HADB_MODEL_PATH=<path> (printed with it). More runs:
 * HADB_MODEL_RUNS. Leave commands out while a known bug is being fixed:
 * HADB_MODEL_WITHOUT=migrations,begin-commit (names in whole-stack-commands.ts; `signed-zero`
 * leaves out the check that -0 comes back as -0, `stalls` the check of the event loop).
 */

/** Memory-backed when the machine has one: the nodes' fsyncs then do not hold the event loop. */
const tempRoot =
  process.env.HADB_MODEL_DIR ?? (fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir());
const root = fs.mkdtempSync(path.join(tempRoot, 'hadb-whole-stack-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let runCounter = 0;

const MAX_NODES = 3;
const MAX_COMMANDS = 16;
/** Runs at once (HADB_MODEL_LANES); a replayed seed runs alone. */
const LANES = Number(process.env.HADB_MODEL_LANES ?? 8);

function withoutFromEnv(): Set<string> {
  return new Set(
    (process.env.HADB_MODEL_WITHOUT ?? '')
      .split(',')
      .map((name) => name.trim())
      .filter((name) => name.length > 0),
  );
}

/** Setup only: a node that just started may lose its first lease on a busy machine. */
async function retrying<T>(attempt: () => Promise<T> | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return (await attempt()) as T;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(20);
    }
  }
}

/** A command whose step is followed by the invariant checks. */
class Checked implements fc.AsyncCommand<Model, Real> {
  constructor(readonly inner: fc.AsyncCommand<Model, Real>) {}
  check = (m: Readonly<Model>) => this.inner.check(m);
  async run(m: Model, real: Real) {
    await this.inner.run(m, real);
    await real.cluster.checkStep();
  }
  toString = () => this.inner.toString();
}

async function runWholeStack(
  nodes: number,
  commands: Iterable<fc.AsyncCommand<Model, Real>>,
  without: ReadonlySet<string>,
  hook?: StoredBodyHook,
): Promise<void> {
  const dir = path.join(root, `run-${runCounter++}`);
  fs.mkdirSync(dir);
  const cluster = new WholeStackCluster({ dir, nodes, hook, checkStalls: !without.has('stalls') });
  const real: Real = { cluster, inflight: [], nextKey: 0, migrations: 0, without };
  try {
    // The first leads and creates the table; the others join at once.
    await cluster.start(0, false);
    const deadline = Date.now() + 10_000;
    while (cluster.leader() === null) {
      if (Date.now() > deadline) throw new Error(`no leader at the start: ${cluster.describe()}`);
      await sleep(5);
    }
    await retrying(() => (cluster.leader() ?? cluster.nodes[0])?.db.execute(SCHEMA), 10_000);
    await Promise.all(Array.from({ length: nodes - 1 }, (_, i) => cluster.start(i + 1, false)));
    const model: Model = { up: Array.from({ length: nodes }, () => true) };
    await fc.asyncModelRun(() => ({ model, real }), commands);
    await Promise.allSettled(real.inflight);
    await cluster.checkStep();
    await cluster.settleAndCheck(dir);
    count('runs');
    coverage.parked = (coverage.parked ?? 0) + cluster.parked.length;
  } finally {
    await cluster.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function scenario(without: ReadonlySet<string>, hook?: () => StoredBodyHook) {
  return fc.asyncProperty(
    fc.integer({ min: 2, max: MAX_NODES }),
    fc.commands(
      wholeStackCommands(MAX_NODES, without).map((arb) =>
        arb.map((command) => new Checked(command)),
      ),
      { maxCommands: MAX_COMMANDS, size: 'max' },
    ),
    (nodes, commands) => runWholeStack(nodes, commands, without, hook?.()),
  );
}

/**
 * A broken capture (teeth): the first changeset `breaks` picks is stored as `change` makes it,
 * resealed so that its checksum chain still holds (the links after it are resealed too).
 */
function breakOneChangeset(
  breaks: (changeset: Changeset) => boolean,
  change: (pages: ChangedPage[]) => ChangedPage[],
): StoredBodyHook {
  const resealed = new Map<string, Uint8Array>();
  const outputs = new Map<string, Uint8Array>();
  let broken = false;
  const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
  return (key, body) => {
    const cacheKey = `${key}:${hex(body)}`;
    const done = outputs.get(cacheKey);
    if (done) return done;
    const changeset = decodeChangeset(body, { db: DB });
    const newPrev = resealed.get(hex(changeset.prevChecksum));
    const breakHere = !broken && breaks(changeset);
    if (!breakHere && newPrev === undefined) return body;
    if (breakHere) broken = true;
    const { checksum: _, version: __, ...rest } = changeset;
    const out = encodeChangeset({
      ...rest,
      prevChecksum: newPrev ?? changeset.prevChecksum,
      pages: breakHere ? change(changeset.pages) : changeset.pages,
    });
    resealed.set(hex(changeset.checksum), out.changeset.checksum);
    outputs.set(cacheKey, out.bytes);
    return out.bytes;
  };
}

/** The first write after the schema is stored without its last page: storage lacks a write. */
const dropOnePage = () =>
  breakOneChangeset(
    (changeset) => changeset.seq >= 3 && changeset.pages.length > 0,
    (pages) => pages.slice(0, -1),
  );

/**
 * The last write of a run is stored with one byte of free space changed: every row is still
 * there, only the page-level comparison of the leader's copy with storage can tell.
 */
const flipFreeByte = () =>
  breakOneChangeset(
    (changeset) =>
      changeset.pages.some((page) => Buffer.from(page.data).includes('settled', 0, 'latin1')),
    (pages) =>
      pages.map((page) => {
        if (!Buffer.from(page.data).includes('settled', 0, 'latin1')) return page;
        const data = new Uint8Array(page.data);
        // The middle of a nearly empty b-tree page: between the cell pointers and the cells.
        data[data.length >> 1] = (data[data.length >> 1] as number) ^ 1;
        return { pgno: page.pgno, data };
      }),
  );

async function assertWholeStack(without: ReadonlySet<string>): Promise<void> {
  const parameters = modelRunParameters<[number, Iterable<fc.AsyncCommand<Model, Real>>]>();
  if (parameters.seed !== undefined) {
    // A path replays one case: its commands, not its timing, so HADB_MODEL_RUNS repeats it.
    const repeats = parameters.path ? Number(process.env.HADB_MODEL_RUNS ?? 1) : 1;
    for (let i = 0; i < repeats; i++) {
      await fc.assert(
        scenario(without),
        parameters.path ? { ...parameters, numRuns: 1 } : parameters,
      );
    }
    return;
  }
  // Runs wait on real timers mostly: lanes of runs side by side, each with a seed of its own.
  const runs = parameters.numRuns ?? 200;
  const seed = Date.now() ^ (Math.random() * 0x100000000);
  const lanes = await Promise.allSettled(
    Array.from({ length: LANES }, (_, lane) =>
      fc.assert(scenario(without), {
        ...parameters,
        numRuns: Math.ceil(runs / LANES),
        seed: (seed + lane) | 0,
        endOnFailure: process.env.HADB_MODEL_SHRINK === undefined,
      }),
    ),
  );
  // Every lane ends before the first failure is told: the others still use the temp folder.
  for (const lane of lanes) if (lane.status === 'rejected') throw lane.reason;
}

/** One line (and a JSON file) saying how often each command and event really ran. */
function writeCoverage(started: number, without: ReadonlySet<string>): void {
  const ran = Object.fromEntries(Object.entries(coverage).sort(([a], [b]) => a.localeCompare(b)));
  const summary = { ms: Date.now() - started, without: [...without], ...ran };
  fs.writeFileSync(
    path.join(os.tmpdir(), 'hadb-whole-stack-coverage.json'),
    `${JSON.stringify(summary, null, 1)}\n`,
  );
  console.log(`whole-stack model coverage: ${JSON.stringify(summary)}`);
}

describe('the whole stack (I1, I2, I3, I7)', () => {
  it('keeps every acknowledged write in storage and every copy equal to it, through every path and event', async () => {
    const without = withoutFromEnv();
    const started = Date.now();
    loopStalls.length = 0;
    try {
      await assertWholeStack(without);
    } finally {
      writeCoverage(started, without);
    }
    // A replayed case runs the commands it has; a full set must have run each of these.
    if (process.env.HADB_MODEL_SEED !== undefined) return;
    const names: CommandName[] = ['kill', 'restart', 'handoff', 'execute', 'hrana-stream-commit'];
    for (const name of names) {
      if (!without.has(name)) expect(coverage[name] ?? 0, name).toBeGreaterThan(0);
    }
  }, 900_000);

  // Known bugs left out, so that what fails is the broken capture (findings 2, 4, 3 of issue 16).
  const known = new Set([
    'migrations',
    'signed-zero',
    'transaction',
    'begin-rollback',
    'hrana-stream-rollback',
  ]);

  it('fails when a capture loses a page (the model has teeth)', async () => {
    loopStalls.length = 0;
    const result = await fc.check(scenario(known, dropOnePage), {
      numRuns: 20,
      seed: 7,
      endOnFailure: true,
    });
    expect(result.failed, 'a changeset stored without a page must be caught').toBe(true);
    expect(result.errorInstance).toBeInstanceOf(InvariantViolation);
    // An acknowledged write storage lacks, or storage's image damaged (an index page lost).
    expect(String(result.errorInstance)).toMatch(/^Error: (I3: acknowledged|I7: storage's image)/);
  }, 300_000);

  it('fails when a stored page differs from the leader by one byte and no row (teeth of the page check)', async () => {
    loopStalls.length = 0;
    const result = await fc.check(scenario(known, flipFreeByte), {
      numRuns: 5,
      seed: 7,
      endOnFailure: true,
    });
    expect(result.failed, 'a page that differs from the leader must be caught').toBe(true);
    expect(result.errorInstance).toBeInstanceOf(InvariantViolation);
    // The leader's copy differs from storage; followers, whose database checksum no longer
    // matches the changeset, refuse it.
    expect(String(result.errorInstance)).toMatch(
      /^Error: I7: (the leader copy on n\d differs|the copy on n\d cannot follow storage .*DATABASE_DIVERGED)/,
    );
  }, 300_000);
});
