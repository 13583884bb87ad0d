import { type ChildProcess, fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';

/**
 * Databases per process (HADB_E2E_MANY_DBS to change it). 1,000 keeps the suite bounded on a
 * 2-core CI; bench/many-dbs.ts measures 10,000 on one node.
 */
const COUNT = Number(process.env.HADB_E2E_MANY_DBS ?? 1000);
const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'many-node.ts');

interface ManyNode {
  child: ChildProcess;
  roles: { leaders: number; followers: number };
  acked: [string, string][];
  next(type: string): Promise<Record<string, unknown>>;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

function start(id: string, root: string): ManyNode {
  const child = fork(FIXTURE, [id, root, String(COUNT)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, HADB_LOG_LEVEL: 'error' },
  });
  children.push(child);
  const node: ManyNode = {
    child,
    roles: { leaders: 0, followers: 0 },
    acked: [],
    next: (type) =>
      new Promise((resolve, reject) => {
        const onMessage = (message: Record<string, unknown>) => {
          if (message.type !== type) return;
          child.off('message', onMessage);
          resolve(message);
        };
        child.on('message', onMessage);
        child.once('exit', (code) => reject(new Error(`${id} exited (${code}) before ${type}`)));
      }),
  };
  child.on('message', (message: Record<string, unknown>) => {
    if (message.type === 'roles') node.roles = message as unknown as ManyNode['roles'];
    if (message.type === 'acked') node.acked.push([message.db as string, message.key as string]);
  });
  return node;
}

async function until(condition: () => boolean, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe(`two processes hosting ${COUNT} databases each (node-level leases)`, () => {
  test('kill one: every database it led gets a new leader, no acknowledged write lost', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-many-e2e-'));
    try {
      const a = start('a', root);
      await a.next('ready');
      const b = start('b', root);
      await b.next('ready');
      await until(() => a.roles.leaders === COUNT && b.roles.followers === COUNT, 60_000, 'roles');

      a.child.send({ type: 'write', on: true });
      b.child.send({ type: 'write', on: true });
      await until(() => a.acked.length >= 100 && b.acked.length >= 100, 60_000, 'writes');

      a.child.kill('SIGKILL');
      const killedAt = Date.now();
      await until(() => b.roles.leaders === COUNT, 60_000, 'b to lead every database');
      const takeoverMs = Date.now() - killedAt;
      const ackedBefore = b.acked.length;
      await until(() => b.acked.length >= ackedBefore + 100, 30_000, 'writes on the new leader');
      b.child.send({ type: 'write', on: false });
      await new Promise((resolve) => setTimeout(resolve, 500));

      const acked = [...a.acked, ...b.acked];
      b.child.send({ type: 'check', acked });
      const { missing } = await b.next('contents');
      expect(missing).toEqual([]);
      expect(acked.length).toBeGreaterThan(300);
      // ttl 3 s + margin: the survivor took every leadership within a few seconds of that.
      expect(takeoverMs).toBeLessThan(20_000);
      console.log(
        `many-dbs e2e: ${COUNT} databases moved in ${takeoverMs} ms, ${acked.length} acked`,
      );
    } finally {
      for (const child of children.splice(0)) child.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 200));
      fs.rmSync(root, { recursive: true, force: true, maxRetries: 5 });
    }
  }, 300_000);
});
