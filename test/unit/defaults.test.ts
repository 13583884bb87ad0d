import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  CHECKPOINT_EVERY_BYTES,
  FORWARD_TIMEOUT_MS,
  HIBERNATE_AFTER_MS,
  MAX_OPEN_DATABASES,
  MAX_RESULT_BYTES,
  OPEN_TIMEOUT_MS,
  PAGE_CACHE_BYTES,
  PAGE_SIZE,
  SELF_CHECK_BUDGET,
  SHIP_DELAY_MS,
  SHIP_INTERVAL_MS,
  SNAPSHOT_EVERY_BYTES,
  SNAPSHOT_EVERY_CHANGESETS,
  STATEMENT_PROCESSES,
  STATEMENT_TIMEOUT_MS,
  TRANSACTION_LIFETIME_MS,
  WAL_TRUNCATE_BYTES,
} from '../../src/defaults.ts';

const MiB = 1024 * 1024;
const read = (file: string) =>
  fs
    .readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')
    .replace(/\s*\n\s*\*?\s*/g, ' ');

// The option docs and the README state these defaults: a changed default must change them too.
describe('defaults as documented', () => {
  it('match the node options', () => {
    const docs = read('src/runtime/node.ts');
    for (const stated of [
      `(default ${SHIP_INTERVAL_MS} ms)`,
      `(default ${SHIP_DELAY_MS} ms)`,
      `(default ${TRANSACTION_LIFETIME_MS / 1000} s)`,
      `(default ${PAGE_SIZE})`,
      `(default ${HIBERNATE_AFTER_MS / 1000} s;`,
      `(default ${MAX_OPEN_DATABASES})`,
      `(default ${PAGE_CACHE_BYTES / MiB} MiB)`,
      `(default ${STATEMENT_TIMEOUT_MS / 1000} s,`,
      `(default ${MAX_RESULT_BYTES / MiB} MiB,`,
      `processes (default ${STATEMENT_PROCESSES})`,
      `(default ${OPEN_TIMEOUT_MS / 1000} s)`,
    ]) {
      expect(docs).toContain(stated);
    }
  });

  it('match the leader options', () => {
    const docs = read('src/replication/sqlite/leader.ts');
    for (const stated of [
      `(default ${SHIP_INTERVAL_MS} ms)`,
      `last checkpoint (default ${CHECKPOINT_EVERY_BYTES / MiB} MiB)`,
      `(default ${WAL_TRUNCATE_BYTES / MiB} MiB)`,
      `(default ${SNAPSHOT_EVERY_CHANGESETS})`,
      `(default ${SNAPSHOT_EVERY_BYTES / MiB} MiB`,
      `(default ${SELF_CHECK_BUDGET};`,
    ]) {
      expect(docs).toContain(stated);
    }
  });

  it('match the README', () => {
    const readme = read('README.md');
    expect(readme).toContain(`\`forwardTimeoutMs\` (${FORWARD_TIMEOUT_MS / 1000} s)`);
    expect(readme).toContain(`(default ${MAX_RESULT_BYTES / MiB} MiB per response)`);
  });
});
