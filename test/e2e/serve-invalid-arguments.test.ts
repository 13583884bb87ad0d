import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { hadb, spawnHadb, watch } from './support/cli.ts';

// `hadb serve` given an argument it cannot use exits 2, as the other commands do, before it
// serves anything: a bad URL, node id, prefix or database name is a usage error, not a failure.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-serve-invalid-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const storage = pathToFileURL(path.join(root, 'storage')).href;
const leases = pathToFileURL(path.join(root, 'leases')).href;

function serve(overrides: Record<string, string>, extra: string[] = []) {
  const flags: Record<string, string> = {
    '--id': 'n',
    '--data': path.join(root, 'n'),
    '--storage': storage,
    '--leases': leases,
    '--db': 'app',
    '--listen': '127.0.0.1:0',
    ...overrides,
  };
  return hadb(['serve', '--no-auth', ...Object.entries(flags).flat(), ...extra], {
    cwd: root,
    env: { HADB_SECRET: 'a-cluster-secret-of-the-test' },
  });
}

describe('hadb serve with invalid arguments', () => {
  it('exits 2 with one line naming the problem, and serves nothing', async () => {
    const cases: [Promise<Awaited<ReturnType<typeof serve>>>, RegExp][] = [
      [serve({ '--storage': 'nope:///x' }), /storage URL has the unknown scheme "nope:"/],
      [serve({ '--leases': 's3://user:pw@bucket/x' }), /lease store URL \(s3:\) holds credentials/],
      [serve({ '--leases': 'nats://127.0.0.1' }), /lease store URL has no bucket/],
      [serve({ '--id': 'bad id' }), /node id must be 1\.\.100 of/],
      [serve({ '--prefix': 'a//b' }), /--prefix: prefix "a\/\/b" is not a valid key prefix/],
      [serve({ '--db': '../x' }), /--db: invalid database name "\.\.\/x"/],
      [serve({ '--listen': '127.0.0.1:99999' }), /--listen must be host:port/],
      [serve({ '--max-result-bytes': '-5' }), /--max-result-bytes must be a positive integer/],
      [serve({}, ['--bogus']), /unknown option '--bogus'/],
    ];
    const runs = await Promise.all(cases.map(([run]) => run));
    for (const [index, run] of runs.entries()) {
      const [, message] = cases[index] as (typeof cases)[number];
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toMatch(message);
      expect(run.stderr).not.toContain('pw');
      expect(run.stdout).not.toContain('listening');
      // The problem, and for commander's own errors the hint: not the whole help.
      expect(run.stderr.trimEnd().split('\n').length, run.stderr).toBeLessThanOrEqual(2);
    }
    expect(fs.existsSync(path.join(root, 'n'))).toBe(false);
  });

  it('takes a prefix with slashes at the ends as the operations commands do', async () => {
    const child = spawnHadb(
      [
        'serve',
        '--no-auth',
        ...['--id', 'p', '--data', path.join(root, 'p'), '--db', 'app'],
        ...['--storage', storage, '--leases', leases, '--listen', '127.0.0.1:0'],
        ...['--prefix', '/prod/'],
      ],
      { cwd: root, env: { HADB_SECRET: 'a-cluster-secret-of-the-test' } },
    );
    const watched = watch(child);
    try {
      await watched.waitForLine((line) => line.includes('"listening"'), 30_000);
    } finally {
      child.kill('SIGTERM');
      await watched.done;
    }
    expect(fs.readdirSync(path.join(root, 'storage'))).toEqual(['prod']);
    expect(fs.existsSync(path.join(root, 'storage', 'prod', '.hadb-cluster'))).toBe(true);
  });
});
