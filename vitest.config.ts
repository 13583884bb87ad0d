import { defineConfig } from 'vitest/config';

const source = (file: string) => new URL(`./src/${file}`, import.meta.url).pathname;

/**
 * Timing-sensitive files: they run one at a time, after the parallel group, so no other test file
 * takes CPU from their real processes, 1.5 s leases, failovers and measured durations. Rule: every
 * file under test/e2e, test/integration and test/hostile is serial unless listed in PARALLEL_SAFE;
 * elsewhere, only the files listed here.
 */
const SERIAL = [
  'test/e2e/**/*.test.ts',
  'test/integration/**/*.test.ts',
  // Searches time-boxed at 25 s that assert their coverage (e.g. crash takeovers happened): with a
  // share of the CPU they search less and can fail. The whole-stack model also runs real nodes
  // on 400 ms leases and fails if the event loop stalls 2.5 s.
  'test/model/*.model.test.ts',
  // Every attack asserts /health answered within 500 ms and no lease changed hands.
  'test/hostile/**/*.test.ts',
];

/**
 * Under SERIAL's directories, but starting no node with leases (test/integration/support/nodes.ts
 * runs 1.5 s leases) and with no failover, crash, /health budget or real-time bound tighter than
 * 20 s: CLI runs on fixed clocks, usage errors and refusals, one `hadb serve` on default 5 s
 * leases, leader/follower replication and restore correctness.
 */
const PARALLEL_SAFE = [
  'test/e2e/cli-{ops,redaction,restore-compacted,s3-credentials,simulate,usage-errors,version}.test.ts',
  'test/e2e/serve-{damaged-database,invalid-arguments,secret-length,store-binding}.test.ts',
  'test/hostile/startup-refusals.test.ts',
  'test/integration/{capture-worker,epoch-start-record,interactive-wal-autocheckpoint}.test.ts',
  'test/integration/follower-{bad-input,bootstrap,diverged-copy,takeover-pull}.test.ts',
  'test/integration/leader-{flush-checkpoint,light-capture,open-on-first-use,records-db-checksum,self-check,setting-reset,snapshot-cadence}.test.ts',
  'test/integration/{replication.property,restore-db-checksum,restore-pitr,retention}.test.ts',
  'test/integration/{s3-emulator-atomicity,verify-db-checksum}.test.ts',
];

export default defineConfig({
  // Tests that import the package by name (`hadb`, `hadb/...`) get the TypeScript sources, as
  // tsc does through the `hadb-source` condition in package.json: no build needed to test.
  resolve: {
    alias: [
      { find: /^hadb$/, replacement: source('index.ts') },
      { find: /^hadb\/(replication|testing|s3|nats)$/, replacement: source('$1.ts') },
    ],
  },
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Logs and child processes' stderr are shown for failed tests only.
    setupFiles: ['test/support/quiet-output.setup.ts'],
    projects: [
      {
        // Two files at a time on a 2-core CI: the rest of the suite (unit, architecture, contract,
        // package, the role graph, and PARALLEL_SAFE).
        extends: true,
        test: {
          name: 'parallel',
          include: ['test/**/*.test.ts'],
          exclude: SERIAL,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        // PARALLEL_SAFE joins the parallel group (same order, same workers); a project of its own
        // because a glob cannot exclude SERIAL's directories and include files inside them.
        extends: true,
        test: {
          name: 'parallel-listed',
          include: PARALLEL_SAFE,
          maxWorkers: 2,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: {
          name: 'serial',
          include: SERIAL,
          exclude: PARALLEL_SAFE,
          maxWorkers: 1,
          // One process for all of them: each file paid about 1.5 s to start a fresh one and
          // import the sources again. None mocks modules, fakes timers or stubs globals.
          isolate: false,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
