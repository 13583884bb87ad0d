import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ServeDidNotStart, spawnServe, stopServe, TOKEN } from './support/cluster.ts';

// Finding 6: database names such as `v2` and `v3-x` were accepted but unreachable (the Hrana
// routes take them for protocol versions), and a 1-character auth token was accepted.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-hostile-startup-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** The exit code when serve refuses to start, or `started` (it is then stopped at once). */
async function startOutcome(id: string, dbs: string[], token: string): Promise<number | string> {
  try {
    const node = await spawnServe({ root, id, dbs, token });
    await stopServe(node, 3000);
    return 'started';
  } catch (error) {
    if (error instanceof ServeDidNotStart) return error.exitCode ?? 'killed';
    throw error;
  }
}

describe('hostile configuration: refused at start', () => {
  it('refuses database names that Hrana routes take for protocol versions', async () => {
    const [v2, v3x] = await Promise.all([
      startOutcome('names-v2', ['v2'], TOKEN),
      startOutcome('names-v3x', ['app', 'v3-x'], TOKEN),
    ]);
    expect({ v2, v3x }).toEqual({ v2: 2, v3x: 2 });
  }, 60_000);

  it('refuses auth tokens shorter than 16 characters, accepts 16', async () => {
    const [one, fifteen, sixteen] = await Promise.all([
      startOutcome('token-1', ['app'], 'x'),
      startOutcome('token-15', ['app'], 'y'.repeat(15)),
      startOutcome('token-16', ['app'], 'z'.repeat(16)),
    ]);
    expect({ one, fifteen, sixteen }).toEqual({ one: 2, fifteen: 2, sixteen: 'started' });
  }, 60_000);
});
