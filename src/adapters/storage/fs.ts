import { randomBytes } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { messageOf } from '../../error-message.ts';
import {
  HadbError,
  InvalidArgumentError,
  InvalidKeyError,
  StorageUnavailableError,
} from '../../errors.ts';
import {
  closeFile,
  linkFile,
  openFile,
  syncDirectory,
  syncFile,
  unlinkFile,
  writeWhole,
} from '../fs-sync.ts';
import {
  assertValidKey,
  assertValidRange,
  compareKeys,
  isValidKey,
  pageOfSortedKeys,
  toListPage,
} from './keys.ts';
import { DEFAULT_LIST_LIMIT, type ListedObject, type StorageBackend } from './types.ts';

const TEMP_PREFIX = '.tmp-';
/** Temporary names are this process's random tag and a counter: unique without a random draw each. */
const TEMP_TAG = randomBytes(8).toString('hex');
let tempCounter = 0;
const MAX_NAME_BYTES = 255;
const MAX_TEMP_ATTEMPTS = 5;

/**
 * Object storage on a local filesystem: the embedded default.
 *
 * The folder is a plain image of the bucket: each key is the relative path of its file under
 * `root` (`db/log/0001` → `root/db/log/0001`), so it can be inspected, and copied to or from S3
 * with ordinary tools. Unlike S3, a key cannot be both an object and a directory of other keys:
 * writing `a/b/c` while `a/b` exists, or `a/b` while `a/b/c` exists, is rejected with
 * {@link InvalidKeyError} and writes nothing. Files and directories whose names are not valid key
 * segments are not listed.
 *
 * Writes are atomic and durable: a temporary `.tmp-*` file is written and fsynced, then renamed
 * (`put`) or hard-linked (`putIfAbsent`, atomic across processes) into place, and the directory
 * is fsynced. Temporary files orphaned by a crash are never listed.
 *
 * Needs a local POSIX filesystem with hard links. On a case-insensitive filesystem, keys that
 * differ only in case are the same object.
 */
export function createFsStorage(options: { root: string }): StorageBackend {
  if (typeof options?.root !== 'string' || options.root === '') {
    throw new InvalidArgumentError(
      'createFsStorage needs { root }: the folder that holds the objects',
    );
  }
  const root = path.resolve(options.root);

  function objectPath(key: string): string {
    assertValidKey(key);
    const names = key.split('/');
    if (names.some((name) => Buffer.byteLength(name) > MAX_NAME_BYTES)) {
      throw new InvalidKeyError(
        key,
        `a path segment is longer than ${MAX_NAME_BYTES} bytes on disk`,
      );
    }
    return path.join(root, ...names);
  }

  /** The directory holding keys that start with `directoryKey/`, or null when no key can. */
  function directoryPath(directoryKey: string): string | null {
    if (directoryKey === '') return root;
    try {
      assertValidKey(directoryKey);
    } catch {
      return null;
    }
    const names = directoryKey.split('/');
    if (names.some((name) => Buffer.byteLength(name) > MAX_NAME_BYTES)) return null;
    return path.join(root, ...names);
  }

  /**
   * Why `key` cannot be written because of another key's file or directory on its path, or null
   * when nothing clashes: an ancestor of its file is a file, or its file is a directory.
   */
  async function findClash(key: string): Promise<string | null> {
    const segments = key.split('/');
    let current = root;
    for (let index = 0; index < segments.length; index++) {
      current = path.join(current, segments[index] ?? '');
      const isLast = index === segments.length - 1;
      let stats: Stats;
      try {
        stats = await fsp.stat(current);
      } catch (error) {
        if (isMissing(error)) return null;
        throw error;
      }
      const clashingKey = segments.slice(0, index + 1).join('/');
      if (!isLast && !stats.isDirectory()) {
        return `clashes with key ${JSON.stringify(clashingKey)}: its file ${current} would have to be a directory`;
      }
      if (isLast && stats.isDirectory()) {
        const found: ListedObject[] = [];
        await walkInKeyOrder(
          { startAfter: undefined, want: 1, found },
          current,
          `${clashingKey}/`,
          '',
        );
        const under = found[0]?.key;
        return under === undefined
          ? `clashes with keys under ${JSON.stringify(`${clashingKey}/`)}: ${current} is a directory`
          : `clashes with key ${JSON.stringify(under)}: ${current} is a directory holding it`;
      }
    }
    return null;
  }

  /** Runs a write of `key`, turning a failure caused by a clashing key into {@link InvalidKeyError}. */
  async function rejectingClashes<T>(key: string, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (error instanceof HadbError) throw error;
      let clash: string | null;
      try {
        clash = await findClash(key);
      } catch {
        // Report the write's own failure rather than the diagnosis's.
        throw error;
      }
      if (clash !== null) throw new InvalidKeyError(key, clash);
      throw error;
    }
  }

  async function pruneEmptyDirectories(directory: string): Promise<void> {
    for (
      let current = directory;
      current.startsWith(root + path.sep);
      current = path.dirname(current)
    ) {
      try {
        await fsp.rmdir(current);
      } catch {
        // Not empty, already gone, or in use: pruning is best effort.
        return;
      }
    }
  }

  return {
    description: `file://${root}`,
    async put(key, body) {
      const target = objectPath(key);
      await mapErrors(`put ${JSON.stringify(key)}`, () =>
        rejectingClashes(key, async () => {
          const directory = path.dirname(target);
          // Fails (ENOTDIR, EEXIST) when a file is where a directory has to be.
          const temp = await createTempFile(directory, body);
          try {
            // Fails (EISDIR) when the target is a directory.
            await fsp.rename(temp, target);
          } catch (error) {
            await removeQuietly(temp);
            throw error;
          }
          await syncDirectory(directory);
        }),
      );
    },

    async putIfAbsent(key, body) {
      const target = objectPath(key);
      return mapErrors(`putIfAbsent ${JSON.stringify(key)}`, () =>
        rejectingClashes(key, async () => {
          const directory = path.dirname(target);
          const temp = await createTempFile(directory, body);
          let created: boolean;
          try {
            // link() fails with EEXIST atomically, even against other processes; rename() would replace.
            await linkFile(temp, target);
            created = true;
          } catch (error) {
            // EEXIST for a directory is a clash with the keys under it, not an existing object.
            if (errorCode(error) !== 'EEXIST' || (await isDirectory(target))) throw error;
            created = false;
          } finally {
            await removeQuietly(temp);
          }
          // Also when it existed: the caller acts on "it exists", so that must survive a crash.
          await syncDirectory(directory);
          return created;
        }),
      );
    },

    async get(key, range) {
      const target = objectPath(key);
      assertValidRange(range);
      return mapErrors(`get ${JSON.stringify(key)}`, async () => {
        let handle: fsp.FileHandle;
        try {
          handle = await fsp.open(target, 'r');
        } catch (error) {
          if (isMissing(error)) return null;
          throw error;
        }
        try {
          const stats = await handle.stat();
          if (!stats.isFile()) return null;
          const start = Math.min(range?.start ?? 0, stats.size);
          const end = Math.min(range?.end ?? stats.size, stats.size);
          return await readAt(handle, start, end - start);
        } finally {
          await handle.close();
        }
      });
    },

    async list(prefix, options = {}) {
      // Validates the limit before walking anything.
      pageOfSortedKeys([], prefix, options);
      const want = (options.limit ?? DEFAULT_LIST_LIMIT) + 1;
      const slash = prefix.lastIndexOf('/');
      const directoryKey = slash === -1 ? '' : prefix.slice(0, slash);
      const directory = directoryPath(directoryKey);
      if (directory === null) return { objects: [] };
      const found: ListedObject[] = [];
      const walk: Walk = { startAfter: options.startAfter, want, found };
      await mapErrors(`list ${JSON.stringify(prefix)}`, () =>
        walkInKeyOrder(
          walk,
          directory,
          directoryKey === '' ? '' : `${directoryKey}/`,
          prefix.slice(slash + 1),
        ),
      );
      return toListPage(pageOfSortedKeys(found, prefix, options));
    },

    async delete(keys) {
      const targets = keys.map(objectPath);
      await mapErrors(`delete ${keys.length} keys`, async () => {
        const touched = new Set<string>();
        for (const target of targets) {
          try {
            await fsp.unlink(target);
            touched.add(path.dirname(target));
          } catch (error) {
            if (isMissing(error)) continue;
            // A directory holds other keys: this one does not exist.
            const code = errorCode(error);
            if ((code === 'EISDIR' || code === 'EPERM') && (await isDirectory(target))) continue;
            throw error;
          }
        }
        for (const directory of touched) {
          try {
            await syncDirectory(directory);
          } catch (error) {
            // Pruned meanwhile by a concurrent delete.
            if (!isMissing(error)) throw error;
          }
        }
        for (const directory of touched) await pruneEmptyDirectories(directory);
      });
    },
  };
}

interface Walk {
  startAfter: string | undefined;
  /** One more than the page size, to know whether there is a next page. */
  want: number;
  found: ListedObject[];
}

interface Child {
  key: string;
  path: string;
  isDirectory: boolean;
  /** Keys under a directory all start with `key/`: sorting on that walks in key byte order. */
  order: string;
}

/** Appends the objects under `directory` to `walk.found` in key order, stopping at `walk.want`. */
async function walkInKeyOrder(
  walk: Walk,
  directory: string,
  keyPrefix: string,
  namePrefix: string,
): Promise<void> {
  const { startAfter, want, found } = walk;
  let files: Child[] = [];
  const flushFiles = async () => {
    const sizes = await Promise.all(files.map((file) => sizeOf(file.path)));
    files.forEach((file, index) => {
      const size = sizes[index];
      if (size !== undefined) found.push({ key: file.key, size });
    });
    files = [];
  };

  for (const child of await readChildren(directory, keyPrefix, namePrefix)) {
    if (found.length + files.length >= want) {
      await flushFiles();
      if (found.length >= want) return;
    }
    if (child.isDirectory) {
      await flushFiles();
      if (found.length >= want) return;
      const allBeforeStart =
        startAfter !== undefined &&
        compareKeys(child.order, startAfter) < 0 &&
        !startAfter.startsWith(child.order);
      if (!allBeforeStart) await walkInKeyOrder(walk, child.path, child.order, '');
    } else if (startAfter === undefined || compareKeys(child.key, startAfter) > 0) {
      files.push(child);
    }
  }
  await flushFiles();
}

async function readChildren(
  directory: string,
  keyPrefix: string,
  namePrefix: string,
): Promise<Child[]> {
  let entries: Dirent[];
  try {
    entries = await fsp.readdir(directory, { withFileTypes: true });
  } catch (error) {
    if (isMissing(error)) return [];
    throw error;
  }
  const children: Child[] = [];
  for (const entry of entries) {
    if (entry.name.startsWith(TEMP_PREFIX)) continue;
    const isDirectory = entry.isDirectory();
    if (!isDirectory && !entry.isFile()) continue;
    if (!entry.name.startsWith(namePrefix)) continue;
    const key = keyPrefix + entry.name;
    // Put there by other tools: a name no key can have (`..`, a backslash...) is not an object.
    if (!isValidKey(key)) continue;
    children.push({
      key,
      path: path.join(directory, entry.name),
      isDirectory,
      order: isDirectory ? `${key}/` : key,
    });
  }
  return children.sort((a, b) => compareKeys(a.order, b.order));
}

async function isDirectory(file: string): Promise<boolean> {
  try {
    return (await fsp.stat(file)).isDirectory();
  } catch {
    return false;
  }
}

async function readAt(
  handle: fsp.FileHandle,
  position: number,
  length: number,
): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  let offset = 0;
  while (offset < length) {
    const { bytesRead } = await handle.read(bytes, offset, length - offset, position + offset);
    if (bytesRead === 0) break;
    offset += bytesRead;
  }
  return offset === length ? bytes : bytes.subarray(0, offset);
}

async function sizeOf(file: string): Promise<number | undefined> {
  try {
    const stats = await fsp.stat(file);
    return stats.isFile() ? stats.size : undefined;
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/** Creates `directory` and its missing parents, each made durable in its own parent. */
async function ensureDirectory(directory: string): Promise<void> {
  const firstCreated = await fsp.mkdir(directory, { recursive: true });
  if (firstCreated === undefined) return;
  const last = path.dirname(firstCreated);
  for (let parent = path.dirname(directory); ; parent = path.dirname(parent)) {
    await syncDirectory(parent);
    if (parent === last || parent === path.dirname(parent)) return;
  }
}

/** A fully written and fsynced temporary file in `directory`, ready to be renamed or linked. */
async function createTempFile(directory: string, body: Uint8Array): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      // The directory usually exists (a database's log): no mkdir until the open says otherwise.
      if (attempt > 1) await ensureDirectory(directory);
      return await writeTempFile(directory, body);
    } catch (error) {
      // Missing, or pruned by a concurrent delete between mkdir and open.
      if (errorCode(error) !== 'ENOENT' || attempt === MAX_TEMP_ATTEMPTS) throw error;
    }
  }
}

async function writeTempFile(directory: string, body: Uint8Array): Promise<string> {
  const temp = path.join(directory, `${TEMP_PREFIX}${TEMP_TAG}-${(tempCounter++).toString(36)}`);
  const fd = await openFile(temp, 'wx');
  let written = false;
  try {
    await writeWhole(fd, body);
    await syncFile(fd);
    written = true;
  } finally {
    await closeFile(fd);
    if (!written) await removeQuietly(temp);
  }
  return temp;
}

async function removeQuietly(file: string): Promise<void> {
  try {
    await unlinkFile(file);
  } catch {
    // An orphaned temporary file is invisible and harmless.
  }
}

async function mapErrors<T>(what: string, operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof HadbError) throw error;
    const message = messageOf(error);
    throw new StorageUnavailableError(`${what}: ${message}`, { cause: error });
  }
}

function errorCode(error: unknown): string | undefined {
  return error instanceof Error ? (error as NodeJS.ErrnoException).code : undefined;
}

function isMissing(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'ENOTDIR';
}
