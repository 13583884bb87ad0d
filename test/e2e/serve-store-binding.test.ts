import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { spawnHadb, watch } from './support/cli.ts';

// `hadb serve` on a cluster folder whose lease store is mistyped on the command line.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-binding-'));
const storageUrl = `file://${path.join(root, 'storage')}`;
const leasesUrl = `file://${path.join(root, 'leases.sqlite')}`;
const typoUrl = `file://${path.join(root, 'lease.sqlite')}`;
const env = { HADB_SECRET: 'a-cluster-secret-of-the-test' };
const running: ChildProcess[] = [];

afterAll(async () => {
  const live = running.filter((child) => child.exitCode === null && child.signalCode === null);
  const exits = live.map((child) => new Promise((resolve) => child.once('exit', resolve)));
  for (const child of live) child.kill('SIGTERM');
  await Promise.all(exits);
  fs.rmSync(root, { recursive: true, force: true });
});

function serveArgs(id: string, leases: string, extra: string[] = []): string[] {
  return [
    'serve',
    ...['--id', id, '--data', path.join(root, id), '--db', 'app'],
    ...['--storage', storageUrl, '--leases', leases],
    ...['--listen', '127.0.0.1:0', '--no-auth'],
    ...extra,
  ];
}

async function serve(id: string, leases: string, extra: string[] = []): Promise<ChildProcess> {
  const child = spawnHadb(serveArgs(id, leases, extra), { cwd: root, env });
  running.push(child);
  await watch(child).waitForLine((line) => line.includes('"listening"'), 30_000);
  return child;
}

async function stop(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
  running.splice(running.indexOf(child), 1);
}

describe('hadb serve with a mistyped lease store', () => {
  it('exits 1 naming both stores; after --init once, nodes start on the new one', async () => {
    const first = await serve('n1', leasesUrl);
    const child = spawnHadb(serveArgs('n2', typoUrl), { cwd: root, env });
    running.push(child);
    const watched = watch(child);
    // Without the binding this node starts, and leads at a new epoch in the new lease store.
    const listening = watched
      .waitForLine((line) => line.includes('"listening"'), 30_000)
      .then(
        () => 'listening' as const,
        () => new Promise<never>(() => {}),
      );
    const refused = await Promise.race([watched.done, listening]);
    if (refused === 'listening') throw new Error('a node started on the mistyped lease store');
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('STORE_MISMATCH');
    expect(refused.stderr).toContain(storageUrl);
    expect(refused.stderr).toContain(typoUrl);
    expect(refused.stderr).toContain('--init');
    // The lease store moved on purpose: the cluster stops, then starts once with --init.
    await stop(first);
    await serve('n1', typoUrl, ['--init']);
    await serve('n2', typoUrl);
  });
});
