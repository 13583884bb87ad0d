// `npm run build` (and `prepare`, so `npm pack` ships it): compiles src/ into dist/ with
// tsconfig.build.json, copies the plain JavaScript files the code loads at run time by URL
// (child process and worker entries), and makes the declarations name `.js` files.
import { spawnSync } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');

rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], {
  stdio: 'inherit',
});
if (compiled.status !== 0) process.exit(compiled.status ?? 1);

for (const entry of readdirSync(src, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile()) continue;
  const from = path.join(entry.parentPath, entry.name);
  const to = path.join(dist, path.relative(src, from));
  if (entry.name.endsWith('.mjs')) copyFileSync(from, to);
  // tsc rewrites `.ts` specifiers in the JavaScript it emits but keeps them in declarations;
  // TypeScript before 5.0 and other tools read `.js` there. Same length: the maps stay right.
  if (entry.name.endsWith('.ts')) {
    const declaration = to.replace(/\.ts$/, '.d.ts');
    const text = readFileSync(declaration, 'utf8');
    writeFileSync(
      declaration,
      text.replace(/((?:from|import\()\s*['"]\.{1,2}\/[^'"]*)\.ts(['"])/g, '$1.js$2'),
    );
  }
}
