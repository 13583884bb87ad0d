/**
 * How many small durable records a second this machine's disk takes, the way the filesystem
 * storage writes an epoch-start record: a temporary file written and fsynced, hard-linked into
 * place in its own directory, the temporary removed, and that directory fsynced. Each record is
 * in a directory of its own, as each database's log is. Run at several levels of parallelism (the
 * libuv threadpool has 4 threads unless UV_THREADPOOL_SIZE says otherwise).
 *
 * It bounds how fast a node can take over thousands of databases on filesystem storage.
 *
 *   npx tsx bench/record-fsync.ts [--quick]
 *   UV_THREADPOOL_SIZE=16 npx tsx bench/record-fsync.ts
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { emit, log, makeTempDir, nowMs, quick, removeDir, round } from './lib.ts';

const RECORDS = quick ? 500 : 2000;
const PARALLELISM = [1, 4, 16, 64];
const BODY = new Uint8Array(200).fill(7);

async function writeRecord(dir: string): Promise<void> {
  const temp = path.join(dir, '.record.tmp');
  const handle = await fsp.open(temp, 'w');
  try {
    await handle.writeFile(BODY);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.link(temp, path.join(dir, '0000000000000001'));
  await fsp.rm(temp);
  const directory = await fsp.open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}

async function run(parallelism: number): Promise<number> {
  const root = makeTempDir('record-fsync');
  const dirs = Array.from({ length: RECORDS }, (_, i) => path.join(root, `db${i}`, 'log'));
  for (const dir of dirs) fs.mkdirSync(dir, { recursive: true });
  let next = 0;
  const started = nowMs();
  await Promise.all(
    Array.from({ length: parallelism }, async () => {
      while (next < dirs.length) await writeRecord(dirs[next++] as string);
    }),
  );
  const ms = nowMs() - started;
  removeDir(root);
  return (RECORDS / ms) * 1000;
}

const recordsPerSec: Record<string, number> = {};
for (const parallelism of PARALLELISM) {
  const rate = await run(parallelism);
  recordsPerSec[parallelism] = Math.round(rate);
  log(`${parallelism} at once: ${Math.round(rate)} records/s (${Math.round(2 * rate)} fsyncs/s)`);
}
emit({
  bench: 'record-fsync',
  quick,
  records: RECORDS,
  threadpool: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
  recordsPerSec,
  fsyncsPerRecord: 2,
  bestFsyncsPerSec: round(2 * Math.max(...Object.values(recordsPerSec)), 0),
});
