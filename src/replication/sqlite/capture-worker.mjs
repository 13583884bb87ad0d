// The capture worker's entry. In the installed package the compiled capture-thread.js sits next
// to this file; running the TypeScript sources (tsx, vitest), tsx compiles them here as in
// bin/hadb.js. tsx is a devDependency, so it is imported only in that case.
import { existsSync } from 'node:fs';

const compiled = new URL('./capture-thread.js', import.meta.url);
if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('./capture-thread.ts');
}
