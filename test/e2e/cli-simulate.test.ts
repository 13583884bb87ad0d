import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const bin = path.resolve(import.meta.dirname, '../../bin/hadb.js');

function hadb(...args: string[]) {
  const result = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('hadb simulate', () => {
  it('runs the README command and reports held invariants', () => {
    const run = hadb('simulate', '--nodes', '3', '--dbs', '10', '--seconds', '60', '--seed', '11');
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/of 3 nodes × 10 databases/);
    expect(run.stdout).toMatch(/after healing: 10\/10 databases with exactly one leader/);
    expect(run.stdout).toMatch(/held/);
  });

  it('prints one JSON object with --json and replays a seed exactly', () => {
    const args = ['simulate', '--nodes', '4', '--dbs', '5', '--seconds', '120', '--seed', '5'];
    const first = hadb(...args, '--json');
    const second = hadb(...args, '--json');
    expect(first.code).toBe(0);
    const a = JSON.parse(first.stdout);
    const b = JSON.parse(second.stdout);
    expect(a).toMatchObject({
      nodes: 4,
      dbs: 5,
      seed: 5,
      ok: true,
      recoveredDatabases: 5,
      violations: [],
    });
    expect(a.simulatedSeconds).toBeGreaterThanOrEqual(120);
    expect(a.failovers).toBeGreaterThan(0);
    const { wallMs: _a, ...restA } = a;
    const { wallMs: _b, ...restB } = b;
    expect(restA).toEqual(restB);
  });

  it('rejects bad arguments with exit code 2 and a clear message', () => {
    const run = hadb('simulate', '--nodes', '0');
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--nodes must be an integer in 1\.\.64/);
  });
});
