#!/usr/bin/env node
// The installed package runs the compiled CLI in dist/. A checkout of the repository (src/ is
// there, and not in the package) runs the TypeScript sources through tsx, a devDependency, so
// the tests and `npm run hadb` never run a stale build.
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(source.href);
} else {
  await import('../dist/cli/main.js');
}
