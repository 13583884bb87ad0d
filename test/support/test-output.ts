/**
 * What a test's nodes log and its child processes write to stderr, kept in memory and printed
 * only when the test fails (test/support/quiet-output.setup.ts): passing tests print nothing.
 */

/** Lines kept at most per test: a chatty failure shows its last lines, not all of them. */
const MAX_LINES = 5000;

const kept: string[] = [];

/** Keeps `text` (one or more lines) from `source` for the current test, shown if it fails. */
export function keepForFailure(source: string, text: string): void {
  for (const line of text.split('\n')) {
    if (line === '') continue;
    kept.push(`[${source}] ${line}`);
  }
  if (kept.length > MAX_LINES) kept.splice(0, kept.length - MAX_LINES);
}

/** Everything kept since the last call, and forgets it. */
export function takeKeptOutput(): string[] {
  return kept.splice(0);
}
