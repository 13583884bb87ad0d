import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../../src/errors.ts';
import { startHranaServer } from '../../src/hrana/server.ts';
import { spawnHadb, watch } from './support/cli.ts';

// A token or secret short enough to guess is refused at start, naming the setting.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-secret-length-'));
const running: ChildProcess[] = [];

afterAll(async () => {
  const live = running.filter((child) => child.exitCode === null && child.signalCode === null);
  const exits = live.map((child) => new Promise((resolve) => child.once('exit', resolve)));
  for (const child of live) child.kill('SIGTERM');
  await Promise.all(exits);
  fs.rmSync(root, { recursive: true, force: true });
});

/** How `hadb serve` ends with these settings: its exit, or `listening` if it started. */
async function serveWith(env: Record<string, string>) {
  const id = `n${running.length}`;
  const child = spawnHadb(
    [
      'serve',
      ...['--id', id, '--data', path.join(root, id), '--db', 'app'],
      ...['--storage', `file://${path.join(root, 'storage')}`],
      ...['--leases', `file://${path.join(root, 'leases.sqlite')}`],
      ...['--listen', '127.0.0.1:0'],
    ],
    { cwd: root, env },
  );
  running.push(child);
  const watched = watch(child);
  const started = watched
    .waitForLine((line) => line.includes('"listening"'), 30_000)
    .then(() => 'listening' as const);
  return Promise.race([started, watched.done]);
}

describe('secret and token length', () => {
  it('hadb serve refuses a short client token or cluster secret, naming the setting', async () => {
    const shortToken = await serveWith({
      HADB_SECRET: 'a-cluster-secret-of-the-test',
      HADB_AUTH_TOKEN: 'x',
    });
    expect(shortToken).toMatchObject({ code: 2 });
    expect(shortToken).toHaveProperty(
      'stderr',
      expect.stringContaining('HADB_AUTH_TOKEN (the client auth token) must be at least 16'),
    );
    const shortSecret = await serveWith({
      HADB_SECRET: 'short',
      HADB_AUTH_TOKEN: 'a-client-token-long-enough',
    });
    expect(shortSecret).toMatchObject({ code: 2 });
    expect(shortSecret).toHaveProperty(
      'stderr',
      expect.stringContaining('HADB_SECRET (the cluster secret) must be at least 16'),
    );
    const fine = await serveWith({
      HADB_SECRET: 'a-cluster-secret-of-the-test',
      HADB_AUTH_TOKEN: '0123456789abcdef',
    });
    expect(fine).toBe('listening');
  }, 90_000);

  it('the Hrana server refuses a short token', async () => {
    const started = startHranaServer({
      host: '127.0.0.1',
      port: 0,
      databases: new Map(),
      authToken: 'x',
      secret: 'a-cluster-secret-of-the-test',
      self: '',
      leaderAddress: () => null,
    });
    await expect(started).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(started).rejects.toThrow('authToken must be at least 16 characters');
  });
});
