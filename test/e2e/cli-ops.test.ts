import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { Progress } from '../../src/cli/progress.ts';
import { logKey } from '../../src/replication/snapshot.ts';
import type { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { type Changeset, decodeChangeset, encodeChangeset } from '../../src/wire/changeset.ts';
import { logicalContent, openNewLeader, withReadOnly } from '../integration/support/replication.ts';
import { type CliRun, hadb, spawnHadb, watch } from './support/cli.ts';

const PREFIX = 'prod';
const DB = 'app';
const T0 = Date.parse('2025-03-01T00:00:00Z');
/** Commit time of changeset `seq`: a minute apart, so `--at` can land between two. */
const commitTime = (seq: number) => T0 + seq * 60_000;
/** The leader's explicit snapshot is taken with this changeset (it took one at seq 0 on open). */
const SNAPSHOT_SEQ = 3;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-ops-'));
const bucket = path.join(root, 'bucket');
const storageUrl = pathToFileURL(bucket).href;
/** A working directory without hadb.json. */
const cwd = path.join(root, 'cwd');

let leader: SqliteLeader;
let now = T0;
/** Logical content of `app` right after each changeset. */
const contentAt = new Map<number, unknown>();
let latestSeq = 0;

const STEPS: ((db: Database.Database) => void)[] = [
  (db) => db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, n REAL)'),
  ...[0, 1, 2, 3].map((batch) => (db: Database.Database) => {
    const insert = db.prepare('INSERT INTO t (v, n) VALUES (?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 25; i++) insert.run(`row ${batch}-${i} ${'x'.repeat(i * 20)}`, i / 3);
    })();
  }),
  (db) => db.exec("UPDATE t SET v = v || ' (edited)' WHERE id % 4 = 0"),
  (db) => db.exec('DELETE FROM t WHERE id % 5 = 0'),
];

async function write(step: (db: Database.Database) => void): Promise<void> {
  latestSeq += 1;
  now = commitTime(latestSeq);
  step(leader.database);
  if (latestSeq === SNAPSHOT_SEQ) await leader.snapshot();
  else await leader.flush();
  expect(leader.position.seq).toBe(latestSeq);
  contentAt.set(latestSeq, logicalContent(leader.database));
}

/** Runs the CLI against the shared storage (or `storage`) with the test prefix. */
function ops(args: string[], storage = storageUrl): Promise<CliRun> {
  return hadb([...args, '--storage', storage, '--prefix', PREFIX], { cwd });
}

function json(run: CliRun): Record<string, unknown> {
  try {
    return JSON.parse(run.stdout) as Record<string, unknown>;
  } catch {
    throw new Error(`not JSON (exit ${run.code}):\n${run.stdout}\nstderr:\n${run.stderr}`);
  }
}

/** A copy of the storage folder that a test may damage or compact. */
function copyOfStorage(label: string): { dir: string; url: string } {
  const dir = path.join(root, `copy-${label}`);
  fs.cpSync(bucket, dir, { recursive: true });
  return { dir, url: pathToFileURL(dir).href };
}

/**
 * Re-encodes the changesets of `app` from `fromSeq` on with `edit` applied, each chained to the
 * one before as rewritten: a history that is intact link by link where `edit` does not break it.
 */
function rewriteLog(
  dir: string,
  fromSeq: number,
  edit: (changeset: Changeset) => Partial<Changeset>,
): void {
  const read = (seq: number) =>
    decodeChangeset(fs.readFileSync(path.join(dir, logKey(PREFIX, DB, seq))));
  let previous = read(fromSeq - 1).checksum;
  for (let seq = fromSeq; seq <= latestSeq; seq++) {
    const { checksum: _old, version: _version, ...original } = read(seq);
    const { bytes, changeset } = encodeChangeset({
      ...original,
      prevChecksum: previous,
      ...edit(original as Changeset),
    });
    fs.writeFileSync(path.join(dir, logKey(PREFIX, DB, seq)), bytes);
    previous = changeset.checksum;
  }
}

function restoredContent(file: string): unknown {
  return withReadOnly(file, (db) => logicalContent(db));
}

beforeAll(async () => {
  fs.mkdirSync(bucket);
  fs.mkdirSync(cwd);
  const storage = createFsStorage({ root: bucket });
  leader = await openNewLeader({
    path: path.join(root, 'leader.db'),
    db: DB,
    storage,
    prefix: PREFIX,
    wallClockMs: () => now,
  });
  for (const step of STEPS) await write(step);

  const other = await openNewLeader({
    path: path.join(root, 'other.db'),
    db: 'other',
    storage,
    prefix: PREFIX,
  });
  other.database.exec('CREATE TABLE k (v)');
  await other.flush();
  other.database.exec('INSERT INTO k VALUES (1)');
  await other.flush();
  await other.close();
  // Not databases: an object right under the prefix, and another prefix.
  await storage.put(`${PREFIX}/leases.sqlite`, new Uint8Array([1]));
  await storage.put(`elsewhere/${DB}/log/0000000000000001`, new Uint8Array([1]));
});

afterAll(async () => {
  await leader?.close();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('hadb list', () => {
  it('lists the databases under the prefix with their sequence, snapshots and log size', async () => {
    const logDir = path.join(bucket, PREFIX, DB, 'log');
    const logBytes = fs
      .readdirSync(logDir)
      .reduce((sum, name) => sum + fs.statSync(path.join(logDir, name)).size, 0);
    const [text, asJson] = await Promise.all([ops(['list']), ops(['list', '--json'])]);
    expect(text.code).toBe(0);
    expect(text.stdout.split('\n')[0]).toMatch(
      /^DATABASE\s+LATEST SEQ\s+SNAPSHOTS\s+CHANGESETS\s+LOG SIZE$/,
    );
    expect(text.stdout).toMatch(new RegExp(`^app\\s+${latestSeq}\\s+2\\s+${latestSeq}\\s+`, 'm'));
    expect(text.stdout).toMatch(/^other\s+2\s+1\s+2\s+/m);
    expect(asJson.code).toBe(0);
    expect(json(asJson)).toEqual({
      ok: true,
      prefix: PREFIX,
      databases: [
        {
          db: 'app',
          latestSeq,
          snapshots: 2,
          latestSnapshotSeq: SNAPSHOT_SEQ,
          changesets: latestSeq,
          logBytes,
          firstLogSeq: 1,
        },
        expect.objectContaining({ db: 'other', latestSeq: 2, snapshots: 1, changesets: 2 }),
      ],
    });
    expect(asJson.stderr).toBe('');
  });

  it('takes storage and prefix from flags over HADB_* over hadb.json', async () => {
    const dir = path.join(root, 'configured');
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'hadb.json'),
      JSON.stringify({ storage: storageUrl, prefix: 'nothing-here' }),
    );
    const fromFile = await hadb(['list', '--json'], { cwd: dir });
    expect(json(fromFile)).toEqual({ ok: true, prefix: 'nothing-here', databases: [] });
    const fromEnv = await hadb(['list', '--json'], { cwd: dir, env: { HADB_PREFIX: PREFIX } });
    expect((json(fromEnv).databases as unknown[]).length).toBe(2);
    const fromFlag = await hadb(['list', '--json', '--prefix', 'elsewhere'], {
      cwd: dir,
      env: { HADB_PREFIX: PREFIX },
    });
    expect(json(fromFlag)).toMatchObject({ prefix: 'elsewhere', databases: [{ db: 'app' }] });
  });
});

describe('hadb restore', () => {
  it('restores the state at --seq N exactly as it was at that moment', async () => {
    const seqs = [1, SNAPSHOT_SEQ - 1, SNAPSHOT_SEQ, SNAPSHOT_SEQ + 1, latestSeq];
    const runs = await Promise.all(
      seqs.map((seq) =>
        ops(['restore', DB, '--seq', String(seq), '-o', path.join(root, `at-${seq}.db`), '--json']),
      ),
    );
    for (const [index, seq] of seqs.entries()) {
      const run = runs[index] as CliRun;
      expect(run.code, run.stderr).toBe(0);
      expect(json(run)).toMatchObject({
        ok: true,
        db: DB,
        seq,
        epoch: 1,
        commitTimeMs: commitTime(seq),
        commitTime: new Date(commitTime(seq)).toISOString(),
        fromSnapshot: seq >= SNAPSHOT_SEQ ? SNAPSHOT_SEQ : 0,
        changesetsApplied: seq >= SNAPSHOT_SEQ ? seq - SNAPSHOT_SEQ : seq,
        output: path.join(root, `at-${seq}.db`),
      });
      expect(restoredContent(path.join(root, `at-${seq}.db`))).toEqual(contentAt.get(seq));
    }
  });

  it('restores as of a time with --at, and the latest state without a target', async () => {
    const between = new Date(commitTime(5) + 30_000).toISOString().replace('Z', '+00:00');
    const [atTime, latest] = await Promise.all([
      ops(['restore', DB, '--at', between, '-o', path.join(root, 'at-time.db')]),
      ops(['restore', DB, '-o', path.join(root, 'latest.db')]),
    ]);
    expect(atTime.code, atTime.stderr).toBe(0);
    expect(atTime.stdout).toMatch(
      /restored app at seq 5 \(epoch 1, committed .*\) into .*at-time\.db/,
    );
    expect(restoredContent(path.join(root, 'at-time.db'))).toEqual(contentAt.get(5));
    expect(latest.code, latest.stderr).toBe(0);
    expect(restoredContent(path.join(root, 'latest.db'))).toEqual(contentAt.get(latestSeq));
  });

  it('refuses to overwrite the output file unless --force', async () => {
    const file = path.join(root, 'existing.db');
    fs.writeFileSync(file, 'precious');
    const refused = await ops(['restore', DB, '--seq', '2', '-o', file]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/exists; pass --force/);
    expect(fs.readFileSync(file, 'utf8')).toBe('precious');
    const forced = await ops(['restore', DB, '--seq', '2', '-o', file, '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(restoredContent(file)).toEqual(contentAt.get(2));
  });

  it('fails with 1 for an unknown database, a seq past the end or a time before the start', async () => {
    const [unknown, pastEnd, tooEarly] = await Promise.all([
      ops(['restore', 'nope', '-o', path.join(root, 'nope.db'), '--json']),
      ops(['restore', DB, '--seq', '999', '-o', path.join(root, 'past.db')]),
      ops(['restore', DB, '--at', '2000-01-01T00:00:00Z', '-o', path.join(root, 'early.db')]),
    ]);
    expect(unknown.code).toBe(1);
    expect(json(unknown)).toMatchObject({ ok: false, code: 'UNKNOWN_DATABASE' });
    expect(unknown.stderr).toMatch(/storage holds nothing for database "nope"/);
    expect(pastEnd.code).toBe(1);
    expect(pastEnd.stderr).toMatch(/REPLICATION_GAP: .*seq 999/);
    expect(tooEarly.code).toBe(1);
    expect(fs.existsSync(path.join(root, 'past.db'))).toBe(false);
  });

  it('rejects bad usage with 2 before touching storage', async () => {
    const out = path.join(root, 'usage.db');
    const runs = await Promise.all([
      ops(['restore', DB]),
      ops(['restore', DB, '-o', out, '--seq', 'x']),
      ops(['restore', DB, '-o', out, '--seq', '1', '--at', '2025-03-01T00:00:00Z']),
      ops(['restore', DB, '-o', out, '--at', '2025-03-01 00:00']),
      ops(['restore', DB, '-o', out, '--at', '2025-02-30T00:00:00Z']),
      ops(['restore', '../x', '-o', out]),
      ops(['restore', DB, '-o', path.join(root, 'no-such-dir', 'x.db')]),
      hadb(['restore', DB, '-o', out], { cwd }),
      ops(['restore', DB, '-o', out, '--bogus']),
    ]);
    const messages = [
      /required option '-o, --output <file>'/,
      /--seq must be an integer/,
      /cannot be used with option '--seq/,
      /--at must be an ISO 8601 time with a zone/,
      /--at must be an ISO 8601 time with a zone/,
      /invalid database name "\.\.\/x"/,
      /the folder of .* does not exist/,
      /no storage configured: pass --storage/,
      /unknown option '--bogus'/,
    ];
    for (const [index, run] of runs.entries()) {
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toMatch(messages[index] as RegExp);
    }
    expect(fs.existsSync(out)).toBe(false);
  });

  it('documents its exit codes in --help', async () => {
    const help = await hadb(['restore', '--help'], { cwd });
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--seq <n>/);
    expect(help.stdout).toMatch(
      /Exit codes:\n {2}0 {2}ok\n {2}1 {2}.*\n {2}2 {2}bad usage.*\n {2}3 {2}storage unreachable/,
    );
  });

  it('exits 3 when storage cannot be reached', async () => {
    const missing = pathToFileURL(path.join(root, 'not-mounted')).href;
    const run = await ops(
      ['restore', DB, '-o', path.join(root, 'unreachable.db'), '--json'],
      missing,
    );
    expect(run.code).toBe(3);
    expect(json(run)).toMatchObject({ ok: false, code: 'STORAGE_UNAVAILABLE' });
  });
});

describe('hadb verify', () => {
  it('passes an intact chain, snapshot images included', async () => {
    const [text, asJson] = await Promise.all([
      ops(['verify', DB]),
      ops(['verify', DB, '--json', '--images']),
    ]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toBe(
      `app: ok: changesets 1..${latestSeq} (${latestSeq}, ${text.stdout.match(/\(\d+, ([^)]+)\)/)?.[1]}), snapshots at 0, ${SNAPSHOT_SEQ}, epochs 1..1\n`,
    );
    expect(asJson.code).toBe(0);
    expect(json(asJson)).toMatchObject({
      ok: true,
      db: DB,
      changesets: latestSeq,
      firstLogSeq: 1,
      lastLogSeq: latestSeq,
      snapshots: [0, SNAPSHOT_SEQ],
      epochs: { first: 1, last: 1 },
      imagesChecked: true,
      strayKeys: [],
    });
  });

  it('names the first bad sequence of a damaged, a missing or a foreign changeset', async () => {
    const corrupt = copyOfStorage('corrupt');
    const file = path.join(corrupt.dir, logKey(PREFIX, DB, 5));
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] ?? 0) ^ 0xff;
    fs.writeFileSync(file, bytes);

    const gap = copyOfStorage('gap');
    fs.rmSync(path.join(gap.dir, logKey(PREFIX, DB, 6)));

    // seq 4 replaced by seq 4 of another database: intact, but not this chain's.
    const foreign = copyOfStorage('foreign');
    fs.copyFileSync(
      path.join(foreign.dir, logKey(PREFIX, 'other', 2)),
      path.join(foreign.dir, logKey(PREFIX, DB, 4)),
    );

    const [corruptRun, corruptText, gapRun, foreignRun] = await Promise.all([
      ops(['verify', DB, '--json'], corrupt.url),
      ops(['verify', DB], corrupt.url),
      ops(['verify', DB, '--json'], gap.url),
      ops(['verify', DB, '--json'], foreign.url),
    ]);
    expect(corruptRun.code).toBe(1);
    expect(json(corruptRun)).toEqual({
      ok: false,
      db: DB,
      firstBadSeq: 5,
      code: 'CHANGESET_CORRUPT',
      message: expect.stringMatching(/CRC32/),
    });
    expect(corruptText.code).toBe(1);
    expect(corruptText.stdout).toMatch(/^app: FAILED at seq 5: CHANGESET_CORRUPT: /);
    expect(gapRun.code).toBe(1);
    expect(json(gapRun)).toMatchObject({
      ok: false,
      firstBadSeq: 6,
      code: 'REPLICATION_GAP',
      message: 'changeset 6 is missing and no snapshot covers it',
    });
    expect(foreignRun.code).toBe(1);
    expect(json(foreignRun)).toMatchObject({
      ok: false,
      firstBadSeq: 4,
      code: 'CHANGESET_WRONG_DATABASE',
    });
  });

  it('fails a fork (an intact changeset off the chain) and an epoch that goes back', async () => {
    const fork = copyOfStorage('fork');
    rewriteLog(fork.dir, 4, (changeset) =>
      changeset.seq === 4 ? { prevChecksum: new Uint8Array(32).fill(7) } : {},
    );
    const epochs = copyOfStorage('epochs');
    rewriteLog(epochs.dir, 4, (changeset) => ({ epoch: changeset.seq === 4 ? 2 : 1 }));
    const [forkRun, epochRun] = await Promise.all([
      ops(['verify', DB, '--json'], fork.url),
      ops(['verify', DB, '--json'], epochs.url),
    ]);
    expect(forkRun.code).toBe(1);
    expect(json(forkRun)).toMatchObject({
      ok: false,
      firstBadSeq: 4,
      code: 'CHANGESET_CHAIN_BROKEN',
      message: expect.stringMatching(/^changeset 4 follows checksum 0707.*but changeset 3 has/),
    });
    expect(epochRun.code).toBe(1);
    expect(json(epochRun)).toMatchObject({
      ok: false,
      firstBadSeq: 5,
      code: 'EPOCH_REGRESSED',
      message: 'changeset 5 has epoch 1, lower than epoch 2 of changeset 4',
    });
  });

  it('fails a snapshot whose manifest disagrees with the changeset at its sequence', async () => {
    const copy = copyOfStorage('manifest');
    const manifestFile = path.join(
      copy.dir,
      PREFIX,
      DB,
      'snap',
      SNAPSHOT_SEQ.toString(16).padStart(16, '0'),
      'manifest',
    );
    const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as { checksum: string };
    manifest.checksum = 'ab'.repeat(32);
    fs.writeFileSync(manifestFile, JSON.stringify(manifest));
    const run = await ops(['verify', DB, '--json'], copy.url);
    expect(run.code).toBe(1);
    expect(json(run)).toMatchObject({
      ok: false,
      firstBadSeq: SNAPSHOT_SEQ,
      code: 'SNAPSHOT_INVALID',
      message: expect.stringMatching(/does not match the changeset at its sequence/),
    });
  });
});

describe('hadb snapshot and compact', () => {
  it('snapshots the latest sequence from storage, byte for byte what the leader would upload', async () => {
    const first = await ops(['snapshot', DB, '--json']);
    expect(first.code, first.stderr).toBe(0);
    const taken = json(first);
    expect(taken).toMatchObject({ ok: true, db: DB, seq: latestSeq, skipped: false, epoch: 1 });

    // The leader snapshots the same sequence: an image that differed even in one header byte
    // would be refused as a fork.
    const leaders = await leader.snapshot();
    expect(leaders.seq).toBe(latestSeq);
    expect(leaders.sha256).toBe(taken.sha256);

    const again = await ops(['snapshot', DB]);
    expect(again.code).toBe(0);
    expect(again.stdout).toBe(
      `app: the latest sequence ${latestSeq} already has a snapshot; nothing to do\n`,
    );
    const verified = await ops(['verify', DB, '--images', '--json']);
    expect(json(verified)).toMatchObject({ ok: true, snapshots: [0, SNAPSHOT_SEQ, latestSeq] });
  });

  it('compacts only with --force, keeping a log a restore and verify still accept', async () => {
    const copy = copyOfStorage('compact');
    const logDir = path.join(copy.dir, PREFIX, DB, 'log');
    const before = fs.readdirSync(logDir).length;

    const dry = await ops(['compact', DB, '--keep', '1'], copy.url);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toBe(
      `app: would delete 2 snapshots (0, ${SNAPSHOT_SEQ}) and ${latestSeq - 1} changesets (1..${latestSeq - 1}, ` +
        `${dry.stdout.match(/, ([\d.]+ [KM]?i?B)\)/)?.[1]}); keeps snapshots ${latestSeq} and the log from seq ${latestSeq} on. ` +
        'Run again with --force to delete\n',
    );
    expect(fs.readdirSync(logDir).length).toBe(before);

    const forced = await ops(['compact', DB, '--keep', '1', '--force', '--json'], copy.url);
    expect(forced.code, forced.stderr).toBe(0);
    expect(json(forced)).toMatchObject({
      ok: true,
      dryRun: false,
      keep: 1,
      keptSnapshots: [latestSeq],
      deletedSnapshots: [0, SNAPSHOT_SEQ],
      deletedChangesets: latestSeq - 1,
      deletedLogSeqs: { first: 1, last: latestSeq - 1 },
    });
    expect(fs.readdirSync(logDir)).toEqual([latestSeq.toString(16).padStart(16, '0')]);

    const [verified, restored, nothingLeft, noKeep] = await Promise.all([
      ops(['verify', DB, '--json'], copy.url),
      ops(['restore', DB, '-o', path.join(root, 'compacted.db')], copy.url),
      ops(['compact', DB, '--keep', '1', '--json'], copy.url),
      ops(['compact', DB], copy.url),
    ]);
    expect(json(verified)).toMatchObject({
      ok: true,
      firstLogSeq: latestSeq,
      snapshots: [latestSeq],
    });
    expect(restored.code, restored.stderr).toBe(0);
    expect(restoredContent(path.join(root, 'compacted.db'))).toEqual(contentAt.get(latestSeq));
    expect(json(nothingLeft)).toMatchObject({
      dryRun: true,
      deletedSnapshots: [],
      deletedChangesets: 0,
    });
    expect(noKeep.code).toBe(2);
  });

  it('refuses to compact below a damaged snapshot and deletes nothing', async () => {
    const copy = copyOfStorage('damaged-snapshot');
    const partFile = path.join(
      copy.dir,
      PREFIX,
      DB,
      'snap',
      latestSeq.toString(16).padStart(16, '0'),
      'part-000000',
    );
    fs.writeFileSync(partFile, 'garbage');
    const files = fs.readdirSync(path.join(copy.dir, PREFIX, DB, 'log')).length;
    const run = await ops(['compact', DB, '--keep', '1', '--force'], copy.url);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/SNAPSHOT_INVALID: .*part-000000.*; nothing was deleted/);
    expect(fs.readdirSync(path.join(copy.dir, PREFIX, DB, 'log')).length).toBe(files);
  });

  it('takes page 1 from the base snapshot when no changeset since holds it', async () => {
    await write((db) => db.exec('UPDATE t SET n = n + 1 WHERE id = 2'));
    const stored = await createFsStorage({ root: bucket }).get(logKey(PREFIX, DB, latestSeq));
    expect(stored && decodeChangeset(stored).pages.map((page) => page.pgno)).not.toContain(1);

    const run = await ops(['snapshot', DB, '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(json(run)).toMatchObject({ seq: latestSeq, skipped: false });
    expect((await leader.snapshot()).sha256).toBe(json(run).sha256);
  });
});

describe('hadb replicate', () => {
  it('follows new changesets until SIGTERM, then stops cleanly', async () => {
    const replica = path.join(root, 'replica.db');
    const child = spawnHadb(
      [
        'replicate',
        DB,
        '-o',
        replica,
        '--interval',
        '50',
        '--json',
        '--storage',
        storageUrl,
        '--prefix',
        PREFIX,
      ],
      { cwd },
    );
    const watched = watch(child);
    const startSeq = latestSeq;
    const position = (seq: number) => (line: string) => {
      const event = JSON.parse(line) as { event: string; seq: number };
      return event.event === 'position' && event.seq === seq;
    };
    await watched.waitForLine(position(startSeq));
    expect(restoredContent(replica)).toEqual(contentAt.get(startSeq));

    await write((db) =>
      db.prepare('INSERT INTO t (v, n) VALUES (?, ?)').run('while replicating', 1),
    );
    await write((db) => db.exec("UPDATE t SET v = 'again' WHERE id = 1"));
    await watched.waitForLine(position(latestSeq));
    expect(restoredContent(replica)).toEqual(contentAt.get(latestSeq));

    child.kill('SIGTERM');
    const run = await watched.done;
    expect(run.code, run.stderr).toBe(0);
    const events = run.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line));
    expect(events[0]).toMatchObject({
      event: 'bootstrapped',
      seq: latestSeq - 2,
      fromSnapshot: true,
    });
    expect(events.at(-1)).toEqual({
      event: 'stopped',
      db: DB,
      seq: latestSeq,
      epoch: 1,
      signal: 'SIGTERM',
    });

    // An existing replica resumes; a file that is not one is refused.
    const stranger = path.join(root, 'stranger.db');
    fs.writeFileSync(stranger, 'not a replica');
    const refused = await ops(['replicate', DB, '-o', stranger]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/is not a replica of app; pass --force/);
  });
});

describe('hadb explain', () => {
  it('shows each setting with its source and redacts secrets', async () => {
    const dir = path.join(root, 'explain');
    fs.mkdirSync(dir);
    fs.writeFileSync(
      path.join(dir, 'hadb.json'),
      JSON.stringify({ prefix: 'from-file', apiToken: 'tok-123', listen: '127.0.0.1:7000' }),
    );
    const env = {
      HADB_STORAGE: `${storageUrl}`,
      HADB_SECRET: 'cluster-secret-value',
      HADB_LEASES: 's3://user:pass-value@bucket/x?endpoint=http://127.0.0.1:9000',
    };
    const [text, asJson] = await Promise.all([
      hadb(['explain', '--check'], { cwd: dir, env }),
      hadb(['explain', '--json', '--prefix', 'from-flag'], { cwd: dir, env }),
    ]);
    for (const run of [text, asJson]) {
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).not.toMatch(/tok-123|cluster-secret-value|pass-value|user:/);
    }
    expect(text.stdout).toMatch(
      `config file: ${path.join(dir, 'hadb.json')} (found in the working directory)`,
    );
    expect(text.stdout).toMatch(
      new RegExp(`^storage\\s+"${storageUrl}"\\s+\\(environment HADB_STORAGE\\)$`, 'm'),
    );
    expect(text.stdout).toMatch(/^prefix\s+"from-file"\s+\(config file .*hadb\.json\)$/m);
    expect(text.stdout).toMatch(/^secret\s+"\*\*\*"\s+\(environment HADB_SECRET; not used/m);
    expect(text.stdout).toMatch(/^storage: reachable$/m);
    expect(json(asJson)).toEqual({
      ok: true,
      configFile: { path: path.join(dir, 'hadb.json'), source: 'default' },
      settings: {
        storage: { value: storageUrl, source: 'env', origin: 'HADB_STORAGE' },
        prefix: { value: 'from-flag', source: 'flag', origin: '--prefix' },
      },
      others: [
        { key: 'apiToken', value: '***', source: 'config', origin: path.join(dir, 'hadb.json') },
        {
          key: 'leases',
          value: 's3://***@bucket/x?endpoint=http://127.0.0.1:9000',
          source: 'env',
          origin: 'HADB_LEASES',
        },
        {
          key: 'listen',
          value: '127.0.0.1:7000',
          source: 'config',
          origin: path.join(dir, 'hadb.json'),
        },
        { key: 'secret', value: '***', source: 'env', origin: 'HADB_SECRET' },
      ],
      problems: [],
    });
  });

  it('exits 2 for an invalid configuration and 3 for storage it cannot reach', async () => {
    const [credentials, unset, badFile, unreachable] = await Promise.all([
      hadb(['explain', '--json', '--storage', 's3://key:hunter2@bucket/x'], { cwd }),
      hadb(['explain'], { cwd }),
      hadb(['explain', '--config', path.join(root, 'missing.json')], { cwd }),
      hadb(['explain', '--check', '--storage', pathToFileURL(path.join(root, 'gone')).href], {
        cwd,
      }),
    ]);
    expect(credentials.code).toBe(2);
    expect(credentials.stdout).not.toMatch(/hunter2/);
    expect(json(credentials)).toMatchObject({
      ok: false,
      settings: { storage: { value: 's3://***@bucket/x', source: 'flag' } },
      problems: [expect.stringMatching(/holds credentials/)],
    });
    expect(unset.code).toBe(2);
    expect(unset.stdout).toMatch(/^problem: storage is not set/m);
    expect(badFile.code).toBe(2);
    expect(badFile.stderr).toMatch(/missing\.json \(from --config\) does not exist/);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stdout).toMatch(
      /^storage: NOT reachable: storage folder .* does not exist/m,
    );
  });
});

describe('progress', () => {
  function stream(isTTY: boolean) {
    const chunks: string[] = [];
    return { chunks, isTTY, columns: 200, write: (chunk: string) => chunks.push(chunk) };
  }
  const MiB = 1024 * 1024;

  it('shows nothing for a small or a quick transfer', () => {
    let clock = 0;
    for (const [isTTY, totalBytes, ms] of [
      [true, MiB, 10_000],
      [false, MiB, 10_000],
      [true, 100 * MiB, 400],
      [false, 100 * MiB, 4000],
    ] as const) {
      const out = stream(isTTY);
      const progress = new Progress({ label: 'x', stream: out, totalBytes, now: () => clock });
      for (let i = 1; i <= 10; i++) {
        clock += ms / 10;
        progress.update((totalBytes * i) / 10);
      }
      progress.finish();
      expect(out.chunks, `${isTTY ? 'terminal' : 'plain'}, ${totalBytes} B in ${ms} ms`).toEqual(
        [],
      );
    }
  });

  it('redraws one line on a terminal and ends it with a newline', () => {
    let clock = 0;
    const out = stream(true);
    const progress = new Progress({
      label: 'big',
      stream: out,
      totalBytes: 100 * MiB,
      now: () => clock,
    });
    for (let i = 1; i <= 10; i++) {
      clock += 1000;
      progress.update(i * 10 * MiB);
    }
    progress.finish();
    expect(out.chunks.length).toBe(11);
    expect(out.chunks[0]).toBe(
      `\r\u001b[Kbig [##${'-'.repeat(22)}] 10% 10.0 MiB of 100.0 MiB 10.0 MiB/s`,
    );
    expect(out.chunks.at(-1)).toBe(
      `\r\u001b[Kbig [${'#'.repeat(24)}] 100% 100.0 MiB of 100.0 MiB 10.0 MiB/s\n`,
    );
    expect(out.chunks.slice(0, -1).join('')).not.toMatch(/\n/);
  });

  it('writes an occasional plain line when stderr is not a terminal', () => {
    let clock = 0;
    const out = stream(false);
    const progress = new Progress({
      label: 'plain',
      stream: out,
      totalBytes: 100 * MiB,
      plainIntervalMs: 5000,
      now: () => clock,
    });
    for (let i = 1; i <= 100; i++) {
      clock += 100;
      progress.update(i * MiB);
    }
    progress.finish();
    // 10 s in steps of 0.1 s: one line per 5 s, then the last.
    expect(out.chunks).toEqual([
      'plain: 50% 50.0 MiB of 100.0 MiB, 10.0 MiB/s\n',
      'plain: 100% 100.0 MiB of 100.0 MiB, 10.0 MiB/s\n',
      'plain: done, 100.0 MiB in 10.0 s\n',
    ]);
  });
});
