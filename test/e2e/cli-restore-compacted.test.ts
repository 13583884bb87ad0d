import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { applyRetention, planRetention } from '../../src/replication/retention.ts';
import { openNewLeader } from '../integration/support/replication.ts';
import { type CliRun, hadb } from './support/cli.ts';

// Compaction deletes the log below the oldest snapshot kept. A restore to a point before it is
// not damaged storage: the answer names the earliest point that can still be restored.

const DB = 'app';
const T0 = Date.parse('2025-03-01T00:00:00Z');
const commitTime = (seq: number) => T0 + seq * 60_000;
/** The snapshot compaction keeps: the earliest restorable point afterwards. */
const KEPT_SNAPSHOT = 4;
const LAST_SEQ = 6;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-restore-compacted-'));
const bucket = path.join(root, 'bucket');
const storageUrl = pathToFileURL(bucket).href;

beforeAll(async () => {
  fs.mkdirSync(bucket);
  const storage = createFsStorage({ root: bucket });
  let now = T0;
  const leader = await openNewLeader({
    path: path.join(root, 'leader.db'),
    db: DB,
    storage,
    prefix: '',
    wallClockMs: () => now,
  });
  try {
    leader.database.exec('create table t (n integer)');
    for (let seq = 1; seq <= LAST_SEQ; seq++) {
      now = commitTime(seq);
      leader.database.prepare('insert into t values (?)').run(seq);
      if (seq === KEPT_SNAPSHOT) await leader.snapshot();
      else await leader.flush();
    }
  } finally {
    await leader.close();
  }
  const plan = await planRetention({ storage, prefix: '', db: DB, keepSnapshots: 1 });
  expect(plan.keptSnapshots).toEqual([KEPT_SNAPSHOT]);
  await applyRetention(storage, '', plan);
});

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

function restore(args: string[], output: string): Promise<CliRun> {
  return hadb(['restore', DB, '-o', path.join(root, output), '--storage', storageUrl, ...args], {
    cwd: root,
  });
}

describe('hadb restore below a compacted log', () => {
  it('names the earliest restorable seq and time instead of a missing changeset', async () => {
    const earliestTime = new Date(commitTime(KEPT_SNAPSHOT)).toISOString();
    const [bySeq, byTime, asJson] = await Promise.all([
      restore(['--seq', '2'], 'by-seq.db'),
      restore(['--at', new Date(commitTime(2)).toISOString()], 'by-time.db'),
      restore(['--seq', '2', '--json'], 'as-json.db'),
    ]);
    for (const run of [bySeq, byTime]) {
      expect(run.code, run.stderr).toBe(1);
      expect(run.stderr).toContain(
        `the log was compacted; the earliest point it can be restored to is seq ${KEPT_SNAPSHOT} (committed ${earliestTime})`,
      );
      expect(run.stderr).not.toMatch(/missing from storage/);
    }
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.stdout)).toMatchObject({
      ok: false,
      code: 'REPLICATION_GAP',
      earliest: { seq: KEPT_SNAPSHOT, commitTime: earliestTime },
    });
    for (const file of ['by-seq.db', 'by-time.db', 'as-json.db']) {
      expect(fs.existsSync(path.join(root, file))).toBe(false);
    }
  });

  it('restores the earliest point it names', async () => {
    const run = await restore(['--seq', String(KEPT_SNAPSHOT), '--json'], 'earliest.db');
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({
      seq: KEPT_SNAPSHOT,
      fromSnapshot: KEPT_SNAPSHOT,
    });
  });
});
