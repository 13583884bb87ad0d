import * as fs from 'node:fs';
import * as path from 'node:path';

/*
 * File work by descriptor through the callback API, for the hot paths (every upload, every
 * takeover's epoch-start record): it costs the event loop about 40% less than the FileHandle
 * of fs/promises. Also the one atomic file writer and the one directory fsync, each in a
 * synchronous and an asynchronous form.
 */

/** A Node callback; calls that yield nothing leave `value` out. */
type Done<T> = (error: NodeJS.ErrnoException | null, value?: T) => void;

function called<T = void>(start: (done: Done<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    start((error, value) => (error ? reject(error) : resolve(value as T)));
  });
}

export function openFile(file: string, flags: string): Promise<number> {
  return called((done) => fs.open(file, flags, done));
}

export function closeFile(fd: number): Promise<void> {
  return called((done) => fs.close(fd, done));
}

export function syncFile(fd: number): Promise<void> {
  return called((done) => fs.fsync(fd, done));
}

/** Writes all of `bytes` at the start of the file `fd`. */
export async function writeWhole(fd: number, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.length; ) {
    offset += await called<number>((done) =>
      fs.write(fd, bytes, offset, bytes.length - offset, offset, done),
    );
  }
}

export function linkFile(existing: string, target: string): Promise<void> {
  return called((done) => fs.link(existing, target, done));
}

export function unlinkFile(file: string): Promise<void> {
  return called((done) => fs.unlink(file, done));
}

/** Fsyncs `directory`, so that files just created, renamed or removed in it survive a crash. */
export async function syncDirectory(directory: string): Promise<void> {
  // Windows cannot open a directory for fsync.
  if (process.platform === 'win32') return;
  const fd = await openFile(directory, 'r');
  try {
    await syncFile(fd);
  } finally {
    await closeFile(fd);
  }
}

/** {@link syncDirectory} on this thread. */
export function syncDirectorySync(directory: string): void {
  // Windows cannot open a directory for fsync.
  if (process.platform === 'win32') return;
  const fd = fs.openSync(directory, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function renameFile(from: string, to: string): Promise<void> {
  return called((done) => fs.rename(from, to, done));
}

export interface AtomicWriteOptions {
  /** The temporary file (default: a unique name beside `file`, `<file>.tmp-<pid>-<random>`). */
  temp?: string;
  /** Permission bits of a new file (default 0o666, less the umask). */
  mode?: number;
}

/**
 * Replaces `file` with `data` so that a crash leaves either the old or the new content: the data
 * goes to a temporary file that is fsynced, renamed over `file`, and then the directory is fsynced
 * so the rename survives a crash too. The temporary file is removed when a step fails.
 */
export function writeFileAtomicSync(
  file: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): void {
  const temp = options.temp ?? tempPathFor(file);
  try {
    const fd = fs.openSync(temp, 'w', options.mode);
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
  syncDirectorySync(path.dirname(file));
}

/** {@link writeFileAtomicSync} with the writes and fsyncs on libuv's threadpool. */
export async function writeFileAtomic(
  file: string,
  data: Uint8Array | string,
  options: AtomicWriteOptions = {},
): Promise<void> {
  const temp = options.temp ?? tempPathFor(file);
  try {
    const fd = await called<number>((done) => fs.open(temp, 'w', options.mode, done));
    try {
      await writeWhole(fd, typeof data === 'string' ? Buffer.from(data) : data);
      await syncFile(fd);
    } finally {
      await closeFile(fd);
    }
    await renameFile(temp, file);
  } catch (error) {
    await called((done) => fs.rm(temp, { force: true }, done));
    throw error;
  }
  await syncDirectory(path.dirname(file));
}

/** Beside `file`, named so no other writer (thread or process) picks the same one. */
function tempPathFor(file: string): string {
  return `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
}
