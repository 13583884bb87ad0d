/**
 * Repro: after the WAL restarts (a checkpoint, then the next write starts again at the front of
 * the `-wal` file, which keeps its size), every capture reads up to 4 MiB — a fresh buffer sized
 * by `file size − cursor`, filled with stale frames of the previous generation — however little
 * was committed. `flush()` captures twice (the flush itself and its checkpoint check), so a
 * single-row commit then costs ~8 MiB of reads and allocations on the event loop.
 *
 * Counts the bytes `fs.readSync` returns per `flush()` of one single-row commit, before and after
 * the first checkpoint.
 *
 *   npx tsx bench/support/repro-wal-reread.ts
 */
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import path from 'node:path';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { SqliteLeader } from '../../src/replication/sqlite/leader.ts';
import { GENESIS_CHECKSUM } from '../../src/wire/changeset.ts';
import { log, makeTempDir, median, nowMs, removeDir, round } from '../lib.ts';

let bytesRead = 0;
const readSync = fs.readSync;
fs.readSync = ((...args: Parameters<typeof fs.readSync>) => {
  const n = readSync(...args);
  bytesRead += n;
  return n;
}) as typeof fs.readSync;
syncBuiltinESMExports();

const dir = makeTempDir('wal-reread');
const walRestarts = { count: 0 };
const leader = await SqliteLeader.open({
  path: path.join(dir, 'db.sqlite'),
  db: 'reread',
  storage: createFsStorage({ root: path.join(dir, 'storage') }),
  prefix: '',
  epoch: 1,
  position: { seq: 0, checksum: GENESIS_CHECKSUM },
  onEvent: (event) => {
    if (event.type === 'wal-restarted') walRestarts.count += 1;
  },
});
leader.database.exec('create table t (id integer primary key, v blob)');
await leader.flush();
const insert = leader.database.prepare('insert into t (v) values (?)');

async function singleRowFlushes(count: number) {
  const bytes: number[] = [];
  const ms: number[] = [];
  for (let i = 0; i < count; i++) {
    insert.run(Buffer.alloc(100, i));
    const before = bytesRead;
    const started = nowMs();
    await leader.flush();
    ms.push(nowMs() - started);
    bytes.push(bytesRead - before);
  }
  return {
    walBytes: fs.statSync(path.join(dir, 'db.sqlite-wal')).size,
    readKiBPerFlushMedian: round(median(bytes) / 1024, 1),
    flushMsMedian: round(median(ms), 2),
  };
}

const before = await singleRowFlushes(50);
// ~8 MiB of commits: past the 4 MiB checkpoint threshold, so the WAL is checkpointed and restarts.
for (let i = 0; i < 2000; i++) insert.run(Buffer.alloc(4000, i));
await leader.flush();
await singleRowFlushes(5); // the first write after the checkpoint restarts the WAL
const after = await singleRowFlushes(50);
await leader.close();
removeDir(dir);
log(JSON.stringify({ beforeCheckpoint: before, afterWalRestart: after, walRestarts }));
