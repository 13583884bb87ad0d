import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { InternalError } from '../errors.ts';

/**
 * hadb's version, from its own package.json: the nearest one named `hadb` above this module, so
 * it is found from `src/` (run through tsx) and from a compiled copy in `dist/` alike.
 */
export function packageVersion(moduleUrl: string = import.meta.url): string {
  let dir = path.dirname(fileURLToPath(moduleUrl));
  for (;;) {
    const file = path.join(dir, 'package.json');
    const manifest = readManifest(file);
    if (manifest?.name === 'hadb' && typeof manifest.version === 'string') {
      return manifest.version;
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new InternalError(`no package.json of hadb above ${moduleUrl}`);
    dir = parent;
  }
}

function readManifest(file: string): { name?: unknown; version?: unknown } | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as { name?: unknown; version?: unknown };
  } catch {
    return null;
  }
}
