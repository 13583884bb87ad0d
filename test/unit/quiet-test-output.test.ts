import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

// The suite's output holds no log lines of passing tests: hadb's default loggers and the stderr of
// the harness's child processes are kept per test and printed for a failed test only.

const repo = path.resolve(import.meta.dirname, '../..');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-quiet-output-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Runs the fixture's two tests (one passes, one fails) with the suite's own setup files. */
async function runFixture(): Promise<string> {
  const { default: config } = (await import('../../vitest.config.ts')) as {
    default: { test?: { setupFiles?: string | string[] } };
  };
  const configFile = path.join(dir, 'vitest.config.mjs');
  fs.writeFileSync(
    configFile,
    `export default ${JSON.stringify({
      test: {
        root: repo,
        include: ['test/support/fixtures/quiet-output.fixture.ts'],
        setupFiles: config.test?.setupFiles ?? [],
        pool: 'forks',
      },
    })};\n`,
  );
  const child = spawn(
    process.execPath,
    [path.join(repo, 'node_modules/vitest/vitest.mjs'), 'run', '--config', configFile],
    { cwd: repo, env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: 'pipe' },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
  });
  await new Promise((resolve) => child.on('close', resolve));
  return output;
}

describe('test output', () => {
  it("prints the logs and child output of a failed test, and none of a passing test's", async () => {
    const output = await runFixture();
    expect(output).toMatch(/Tests {2}1 failed \| 1 passed/);
    expect(output).toContain('logs and child output of the failed test "fails"');
    expect(output).toContain('line logged by the failing test');
    expect(output).toContain('[child] stderr of a child of the failing test');
    expect(output).not.toContain('line logged by the passing test');
    expect(output).not.toContain('stderr of a child of the passing test');
  });
});
