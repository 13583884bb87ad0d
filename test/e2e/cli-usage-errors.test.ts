import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hadb } from './support/cli.ts';

// A usage error is one line saying what is wrong and one saying where the help is, exit 2: the
// whole help after it would push the error off the screen.

const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-usage-'));
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

describe('usage errors', () => {
  it('print one line and a hint naming the command, exit 2', async () => {
    const cases: [string[], RegExp, string][] = [
      [['nope'], /^error: unknown command 'nope'/, "Run 'hadb --help' for usage."],
      [
        ['list', '--bogus'],
        /^error: unknown option '--bogus'/,
        "Run 'hadb list --help' for usage.",
      ],
      [
        ['restore', '-o', path.join(cwd, 'x.db')],
        /^error: missing required argument 'db'/,
        "Run 'hadb restore --help' for usage.",
      ],
      [
        ['verify', 'app', '--storage'],
        /^error: option '--storage <url>' argument missing/,
        "Run 'hadb verify --help' for usage.",
      ],
      [
        ['serve', '--id', 'n'],
        /^error: required option '--data <dir>' not specified/,
        "Run 'hadb serve --help' for usage.",
      ],
    ];
    const runs = await Promise.all(cases.map(([args]) => hadb(args, { cwd })));
    for (const [index, run] of runs.entries()) {
      const [args, error, hint] = cases[index] as [string[], RegExp, string];
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stdout, args.join(' ')).toBe('');
      const lines = run.stderr.trimEnd().split('\n');
      expect(lines, args.join(' ')).toHaveLength(2);
      expect(lines[0]).toMatch(error);
      expect(lines[1]).toBe(hint);
    }
  });

  it('--help still prints the whole help, exit 0', async () => {
    const run = await hadb(['list', '--help'], { cwd });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^Usage: hadb list/);
    expect(run.stdout).toMatch(/--storage <url>/);
  });
});
