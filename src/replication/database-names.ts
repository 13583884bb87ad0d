/** The databases a storage prefix holds, as folders of keys (storage itself lists no folders). */
import type { StorageBackend } from '../adapters/storage/types.ts';
import { assertValidDbName } from './snapshot.ts';

/** The storage folder of all databases under `prefix`, with its trailing `/` ('' for none). */
export function databasesRoot(prefix: string): string {
  return prefix === '' ? '' : `${prefix}/`;
}

/**
 * The names of the folders directly under `prefix` that may be databases, in key order. Storage
 * lists no folders, so this skips over each one: after the first key of `name/`, it asks for the
 * first key after every possible key of `name/`. One small list call per folder, however large
 * its log.
 */
export async function* listDatabaseNames(
  storage: StorageBackend,
  prefix: string,
): AsyncGenerator<string, void, undefined> {
  const root = databasesRoot(prefix);
  // Above every character a key can hold, so `name/\u{10FFFF}` sorts after all of `name/`'s keys.
  const afterEverything = '\u{10FFFF}';
  let startAfter: string | undefined;
  for (;;) {
    const page = await storage.list(root, {
      limit: 1,
      ...(startAfter === undefined ? {} : { startAfter }),
    });
    const first = page.objects[0];
    if (first === undefined) return;
    const rest = first.key.slice(root.length);
    const slash = rest.indexOf('/');
    if (slash === -1) {
      // An object right under the prefix (a lease file, say) is not a database.
      startAfter = first.key;
      continue;
    }
    const name = rest.slice(0, slash);
    startAfter = `${root}${name}/${afterEverything}`;
    if (isValidDbName(name)) yield name;
  }
}

function isValidDbName(name: string): boolean {
  try {
    assertValidDbName(name);
    return true;
  } catch {
    return false;
  }
}
