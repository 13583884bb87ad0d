import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import { StatementRunner } from '../../src/statements/statement-runner.ts';
import { waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

// The statement processes themselves: replaced when killed, gone when their node is.

const freshDir = tempDirs('hadb-statement-processes-');
const NEVER_ENDS =
  'with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c';
const runners: StatementRunner[] = [];

afterEach(() => {
  for (const runner of runners.splice(0)) runner.close();
});

function database(): string {
  const file = path.join(freshDir('db'), 'db.sqlite');
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec("create table t(id integer primary key, v); insert into t(v) values ('one')");
  db.close();
  return file;
}

/** True while `pid` runs (a zombie waiting to be reaped counts as ended). */
function running(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe('statement processes', () => {
  test('one past the time limit is killed and replaced; the next read runs in a new process', async () => {
    const file = database();
    const runner = new StatementRunner({ processes: 1, timeoutMs: 500 });
    runners.push(runner);
    await runner.read({ path: file, statements: [{ sql: 'select 1' }], bigints: false });
    const [first] = runner.processIds;
    const error = await runner
      .read({ path: file, statements: [{ sql: NEVER_ENDS }], bigints: false })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'STATEMENT_TIMEOUT' });
    await waitFor(() => !running(first as number), 5000, 'the killed process to end');
    const rows = await runner.read({
      path: file,
      statements: [{ sql: 'select v from t' }],
      bigints: false,
    });
    expect(rows).toEqual([[{ v: 'one' }]]);
    expect(runner.processIds).toHaveLength(1);
    expect(runner.processIds[0]).not.toBe(first);
  });

  test('one that dies during a read fails that read with a clear error and is replaced', async () => {
    const file = database();
    const runner = new StatementRunner({ processes: 1, timeoutMs: 30_000 });
    runners.push(runner);
    await runner.read({ path: file, statements: [{ sql: 'select 1' }], bigints: false });
    const [first] = runner.processIds;
    const read = runner
      .read({ path: file, statements: [{ sql: NEVER_ENDS }], bigints: false })
      .catch((e: unknown) => e);
    await new Promise((resolve) => setTimeout(resolve, 200));
    process.kill(first as number, 'SIGKILL');
    const error = (await read) as Error & { code?: string };
    expect(error.code).toBe('CLOSED');
    expect(error.message).toMatch(/statement process .* ended \(SIGKILL\)/);
    const rows = await runner.read({
      path: file,
      statements: [{ sql: 'select v from t' }],
      bigints: true,
    });
    expect(rows).toEqual([[{ v: 'one' }]]);
    expect(runner.processIds[0]).not.toBe(first);
  });

  test('they end when their node process is SIGKILLed, even in the middle of a statement', async () => {
    const file = database();
    const script = path.join(freshDir('script'), 'node.mts');
    const runnerModule = new URL('../../src/statements/statement-runner.ts', import.meta.url).href;
    fs.writeFileSync(
      script,
      `import { StatementRunner } from ${JSON.stringify(runnerModule)};
       const runner = new StatementRunner({ processes: 2, timeoutMs: 60_000 });
       await runner.read({ path: ${JSON.stringify(file)}, statements: [{ sql: 'select 1' }], bigints: false });
       void runner.read({ path: ${JSON.stringify(file)}, statements: [{ sql: ${JSON.stringify(NEVER_ENDS)} }], bigints: false });
       await runner.read({ path: ${JSON.stringify(file)}, statements: [{ sql: 'select 1' }], bigints: false });
       process.stdout.write(JSON.stringify(runner.processIds) + '\\n');
       setInterval(() => {}, 1000);`,
    );
    const parent = spawn(process.execPath, ['--import', 'tsx', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const pids = await new Promise<number[]>((resolve, reject) => {
      parent.stdout.once('data', (data: Buffer) => resolve(JSON.parse(data.toString())));
      parent.once('exit', (code) => reject(new Error(`the node process exited (${code})`)));
    });
    expect(pids).toHaveLength(2);
    expect(pids.every(running)).toBe(true);
    parent.kill('SIGKILL');
    await waitFor(() => !pids.some(running), 5000, 'the statement processes to end');
  });
});
