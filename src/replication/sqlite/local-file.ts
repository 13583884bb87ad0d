import fs from 'node:fs';
import path from 'node:path';
import { TEMP_MARKERS } from '../../side-files.ts';

export function readJsonFileSync(file: string): unknown {
  // Missing is the common case (a takeover of a follower copy): no exception to build for it.
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

export function removeFileSync(file: string): void {
  fs.rmSync(file, { force: true });
}

/** Leftover temporary files of each directory, as this process found them on its first look. */
const leftoversByDirectory = new Map<string, Map<string, string[]>>();

/**
 * {@link removeLeftoverTempFiles} for opening many databases of one folder: the folder is read
 * once per process, not once per database (that was quadratic in the number of databases). What a
 * killed process left is there before this one starts; this process's own temporary files are
 * renamed or removed by the step that wrote them.
 */
export function removeLeftoverTempFilesOnce(dbPath: string): void {
  const dir = path.dirname(dbPath);
  let byBase = leftoversByDirectory.get(dir);
  if (!byBase) {
    byBase = new Map();
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      // Nothing there yet: nothing left over either.
    }
    for (const name of names) {
      const at = TEMP_MARKERS.map((marker) => name.indexOf(marker)).find((index) => index > 0);
      if (at === undefined) continue;
      const base = name.slice(0, at);
      byBase.set(base, [...(byBase.get(base) ?? []), name]);
    }
    leftoversByDirectory.set(dir, byBase);
  }
  const base = path.basename(dbPath);
  const names = byBase.get(base);
  if (!names) return;
  byBase.delete(base);
  for (const name of names) removeFileSync(path.join(dir, name));
}

/**
 * Removes temporary files a killed process left next to `dbPath` (partial downloads can be large).
 * Only one hadb process may own a database file at a time, so nothing live is removed.
 */
export function removeLeftoverTempFiles(dbPath: string): void {
  const dir = path.dirname(dbPath);
  const base = path.basename(dbPath);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(base)) continue;
    const rest = name.slice(base.length);
    if (TEMP_MARKERS.some((marker) => rest.startsWith(marker)))
      removeFileSync(path.join(dir, name));
  }
}

/** The file's size; 0 when it is missing. */
export function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}
