/**
 * Setup file of every test file (vitest.config.ts): hadb's own loggers (a node given no logger,
 * the Hrana server) write into the failed-test buffer instead of stderr, and a failed test
 * prints what was kept for it.
 */
import { beforeEach } from 'vitest';
import { setDefaultLogDestination } from '../../src/log.ts';
import { keepForFailure, takeKeptOutput } from './test-output.ts';

setDefaultLogDestination({ write: (line: string) => keepForFailure('log', line) });

beforeEach((context) => {
  // Lines logged between tests (after one ended, in beforeAll) are not this test's.
  takeKeptOutput();
  context.onTestFailed(() => {
    const lines = takeKeptOutput();
    if (lines.length === 0) return;
    process.stderr.write(
      `\n--- logs and child output of the failed test "${context.task.name}" ---\n${lines.join('\n')}\n--- end ---\n`,
    );
  });
});
