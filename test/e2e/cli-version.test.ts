import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { packageVersion } from '../../src/cli/version.ts';
import { hadb } from './support/cli.ts';

const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-version-'));
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

const manifest = JSON.parse(
  fs.readFileSync(path.resolve(import.meta.dirname, '../../package.json'), 'utf8'),
) as { version: string };

describe('hadb --version', () => {
  it("prints package.json's version and exits 0", async () => {
    const [long, short] = await Promise.all([hadb(['--version'], { cwd }), hadb(['-V'], { cwd })]);
    for (const run of [long, short]) {
      expect(run.code, run.stderr).toBe(0);
      expect(run.stdout).toBe(`${manifest.version}\n`);
    }
  });

  it('finds the package.json named hadb above a module copied elsewhere, as in dist/', () => {
    // dist/cli/version.js sits two folders down like src/cli/version.ts; a package.json of
    // another name in between (a nested app, a bundler's folder marker) is passed over.
    const root = path.join(cwd, 'installed');
    fs.mkdirSync(path.join(root, 'dist', 'cli'), { recursive: true });
    fs.writeFileSync(
      path.join(root, 'package.json'),
      JSON.stringify({ name: 'hadb', version: '9.8.7' }),
    );
    fs.writeFileSync(path.join(root, 'dist', 'package.json'), JSON.stringify({ type: 'module' }));
    const module = pathToFileURL(path.join(root, 'dist', 'cli', 'version.js')).href;
    expect(packageVersion(module)).toBe('9.8.7');
  });
});
