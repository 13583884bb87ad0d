import { defineConfig } from 'vitest/config';

const source = (file: string) => new URL(`./src/${file}`, import.meta.url).pathname;

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
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Logs and child processes' stderr are shown for failed tests only.
    setupFiles: ['test/support/quiet-output.setup.ts'],
  },
});
