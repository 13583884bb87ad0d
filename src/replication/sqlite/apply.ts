import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as nodePath from 'node:path';
import { syncDirectorySync, writeFileAtomicSync } from '../../adapters/fs-sync.ts';
import { InvalidArgumentError } from '../../errors.ts';
import { REDO_SUFFIX, redoPath, redoTempPath } from '../../side-files.ts';
import type { Changeset } from '../../wire/changeset.ts';
import { FOLLOWER_OWNED_HEADER_BYTES } from '../../wire/db-checksum.ts';
import { removeFileSync } from './local-file.ts';

/**
 * Writes a leader's changesets straight into a follower's database file.
 *
 * The follower file belongs to hadb; application connections open it read-only. They see each
 * apply on their next statement because the follower keeps the file in rollback-journal mode and
 * bumps the change counter on every apply, which makes SQLite drop its page cache. Apply only
 * between reads: no connection on the file may have an open iterator or transaction.
 *
 * Crash safety: the changeset is first persisted as a redo file next to the database; page writes
 * are idempotent, so {@link PageApplier.recover} re-applies it after a crash.
 */

/** Page-1 header bytes the follower owns (see the database checksum, which leaves them out). */
export { FOLLOWER_OWNED_HEADER_BYTES, REDO_SUFFIX };

/** A copy of page 1 with the follower-owned header bytes zeroed, to compare with the leader's. */
export function maskFollowerOwnedHeader(page1: Uint8Array): Uint8Array {
  const copy = new Uint8Array(page1);
  for (const offset of FOLLOWER_OWNED_HEADER_BYTES) {
    if (offset < copy.length) copy[offset] = 0;
  }
  return copy;
}

/** Points inside an apply, reported to {@link PageApplierOptions.onStep}. */
export type ApplyStep = 'redo-written' | 'page-written' | 'pages-written' | 'truncated' | 'synced';

export interface PageApplierOptions {
  /** Test hook, called after each step of an apply; throwing from it simulates a crash there. */
  onStep?: (step: ApplyStep) => void;
}

const HEADER_BYTES = 100;
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');
const COUNTER_OFFSET = 24;
const VERSION_VALID_FOR_OFFSET = 92;
const PAGE_SIZE_OFFSET = 16;

const REDO_MAGIC = Buffer.from('hadbredo', 'latin1');
const REDO_VERSION = 1;
// magic(8) version(4) seq(8) pageSize(4) dbSizePages(4) pageCount(4)
const REDO_HEADER_BYTES = 32;
const REDO_DIGEST_BYTES = 32;
const MAX_PGNO = 0xffff_fffe;

interface Redo {
  seq: number;
  pageSize: number;
  dbSizePages: number;
  pages: { pgno: number; data: Uint8Array }[];
}

export class PageApplier {
  readonly path: string;
  readonly redoPath: string;
  readonly #onStep: ((step: ApplyStep) => void) | undefined;
  #fd: number | null;
  #pendingRedo: boolean;

  private constructor(path: string, fd: number, options: PageApplierOptions) {
    this.path = path;
    this.redoPath = redoPath(path);
    this.#onStep = options.onStep;
    this.#fd = fd;
    this.#pendingRedo = fs.existsSync(this.redoPath);
  }

  /**
   * Opens (creating it empty if missing) the follower file. Call {@link recover} next.
   * The descriptor stays open until {@link close}: closing any descriptor of a file drops every
   * POSIX lock this process holds on it, including those of SQLite connections.
   */
  static open(path: string, options: PageApplierOptions = {}): PageApplier {
    const existed = fs.existsSync(path);
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    try {
      if (!existed) syncDirectorySync(nodePath.dirname(path));
      removeFileSync(redoTempPath(path));
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
    return new PageApplier(path, fd, options);
  }

  /**
   * Finishes an apply a crash interrupted. Returns the seq of the changeset re-applied, or null
   * when there was none or its redo file was torn (then it was never applied: the redo is written
   * before any page, so the caller refetches it).
   */
  recover(): number | null {
    const fd = this.#openFd();
    removeFileSync(redoTempPath(this.path));
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(this.redoPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      this.#pendingRedo = false;
      return null;
    }
    const redo = decodeRedo(bytes);
    // No page-size check against the file: page 1 may be half written by the interrupted apply.
    if (redo !== null) this.#writePages(fd, redo);
    this.#dropRedo();
    return redo === null ? null : redo.seq;
  }

  /** Applies a changeset durably: redo file, pages, truncate, fsync, redo file removed. */
  apply(changeset: Changeset): void {
    const fd = this.#openFd();
    if (this.#pendingRedo) {
      throw new InvalidArgumentError(
        `${this.redoPath} holds an unfinished apply; call recover() before applying more`,
      );
    }
    const redo = toRedo(changeset);
    this.#checkAgainstFile(fd, redo);
    // Set first: if the write fails half way, recover() sorts out whatever is left.
    this.#pendingRedo = true;
    // A fixed temporary name: opening the file again removes one a crash left.
    writeFileAtomicSync(this.redoPath, encodeRedo(redo), {
      temp: redoTempPath(this.path),
      mode: 0o644,
    });
    this.#step('redo-written');
    this.#writePages(fd, redo);
    this.#dropRedo();
  }

  close(): void {
    if (this.#fd === null) return;
    const fd = this.#fd;
    this.#fd = null;
    fs.closeSync(fd);
  }

  #openFd(): number {
    if (this.#fd === null) {
      throw new InvalidArgumentError(`page applier for ${this.path} is closed`);
    }
    return this.#fd;
  }

  #step(step: ApplyStep): void {
    this.#onStep?.(step);
  }

  #checkAgainstFile(fd: number, redo: Redo): void {
    const size = fs.fstatSync(fd).size;
    if (size === 0) {
      if (redo.pages[0]?.pgno !== 1) {
        throw new InvalidArgumentError(
          `changeset ${redo.seq} has no page 1 but ${this.path} is empty`,
        );
      }
      return;
    }
    const header = readHeader(fd, size);
    if (header === null || !SQLITE_MAGIC.equals(header.subarray(0, SQLITE_MAGIC.length))) {
      throw new InvalidArgumentError(`${this.path} is not a SQLite database`);
    }
    const filePageSize = pageSizeOf(header);
    if (filePageSize !== redo.pageSize) {
      throw new InvalidArgumentError(
        `changeset ${redo.seq} has page size ${redo.pageSize} but ${this.path} has ${filePageSize}`,
      );
    }
  }

  /** Idempotent: the same redo written twice leaves the same file (but for the counters). */
  #writePages(fd: number, redo: Redo): void {
    const size = fs.fstatSync(fd).size;
    const current = readHeader(fd, size);
    const currentCounter = current === null ? 0 : current.readUInt32BE(COUNTER_OFFSET);
    const first = redo.pages[0];
    const page1 = first?.pgno === 1 ? first.data : null;
    const incoming = page1 === null ? 0 : Buffer.from(page1).readUInt32BE(COUNTER_OFFSET);
    // Readers compare the counter for inequality only; it must differ from what they cached.
    let counter = (Math.max(currentCounter, incoming) + 1) >>> 0;
    if (counter === currentCounter) counter = (counter + 1) >>> 0;

    for (const page of redo.pages) {
      const data = page.pgno === 1 ? patchHeader(Buffer.from(page.data), counter) : page.data;
      writeAll(fd, data, (page.pgno - 1) * redo.pageSize);
      this.#step('page-written');
    }
    if (page1 === null) {
      if (current === null) {
        throw new InvalidArgumentError(`changeset ${redo.seq} has no page 1 and ${this.path} none`);
      }
      // Without a new change counter, open connections would keep serving stale cached pages.
      writeAll(fd, patchHeader(current, counter), 0);
    }
    this.#step('pages-written');
    fs.ftruncateSync(fd, redo.dbSizePages * redo.pageSize);
    this.#step('truncated');
    fs.fsyncSync(fd);
    this.#step('synced');
  }

  #dropRedo(): void {
    removeFileSync(this.redoPath);
    // Otherwise a crash could bring the deleted redo back; harmless now, but not after a later apply.
    syncDirectorySync(nodePath.dirname(this.redoPath));
    this.#pendingRedo = false;
  }
}

function toRedo(changeset: Changeset): Redo {
  const { seq, pageSize, dbSizePages, pages } = changeset;
  const why = invalidRedo(seq, pageSize, dbSizePages, pages);
  if (why !== null) throw new InvalidArgumentError(`changeset ${seq}: ${why}`);
  return { seq, pageSize, dbSizePages, pages };
}

function invalidRedo(
  seq: number,
  pageSize: number,
  dbSizePages: number,
  pages: readonly { pgno: number; data: Uint8Array }[],
): string | null {
  if (!Number.isSafeInteger(seq) || seq < 0) return `bad seq ${seq}`;
  if (!Number.isInteger(pageSize) || pageSize < 512 || pageSize > 65536) {
    return `bad page size ${pageSize}`;
  }
  if ((pageSize & (pageSize - 1)) !== 0) return `page size ${pageSize} is not a power of two`;
  if (!Number.isInteger(dbSizePages) || dbSizePages < 1 || dbSizePages > MAX_PGNO) {
    return `bad database size ${dbSizePages} pages`;
  }
  let previous = 0;
  for (const { pgno, data } of pages) {
    if (!Number.isInteger(pgno) || pgno <= previous || pgno > dbSizePages) {
      return `page ${pgno} out of order or beyond the database size ${dbSizePages}`;
    }
    if (data.length !== pageSize) return `page ${pgno} has ${data.length} bytes, not ${pageSize}`;
    previous = pgno;
  }
  const first = pages[0];
  if (first?.pgno === 1) {
    const header = Buffer.from(first.data.buffer, first.data.byteOffset, HEADER_BYTES);
    if (!SQLITE_MAGIC.equals(header.subarray(0, SQLITE_MAGIC.length))) {
      return 'page 1 is not a SQLite header';
    }
    if (pageSizeOf(header) !== pageSize) return `page 1 says page size ${pageSizeOf(header)}`;
  }
  return null;
}

/**
 * Redo file: header (magic `hadbredo`, u32 version, u64 seq, u32 pageSize, u32 dbSizePages,
 * u32 page count, all big-endian), then per page u32 pgno and the page bytes, then the SHA-256 of
 * everything before it.
 */
function encodeRedo(redo: Redo): Buffer {
  const recordBytes = 4 + redo.pageSize;
  const total = REDO_HEADER_BYTES + redo.pages.length * recordBytes + REDO_DIGEST_BYTES;
  const out = Buffer.alloc(total);
  REDO_MAGIC.copy(out, 0);
  out.writeUInt32BE(REDO_VERSION, 8);
  out.writeBigUInt64BE(BigInt(redo.seq), 12);
  out.writeUInt32BE(redo.pageSize, 20);
  out.writeUInt32BE(redo.dbSizePages, 24);
  out.writeUInt32BE(redo.pages.length, 28);
  let offset = REDO_HEADER_BYTES;
  for (const page of redo.pages) {
    out.writeUInt32BE(page.pgno, offset);
    out.set(page.data, offset + 4);
    offset += recordBytes;
  }
  createHash('sha256').update(out.subarray(0, offset)).digest().copy(out, offset);
  return out;
}

/** The redo, or null if the bytes are torn, damaged or not a redo file at all. */
function decodeRedo(bytes: Buffer): Redo | null {
  if (bytes.length < REDO_HEADER_BYTES + REDO_DIGEST_BYTES) return null;
  if (!REDO_MAGIC.equals(bytes.subarray(0, REDO_MAGIC.length))) return null;
  if (bytes.readUInt32BE(8) !== REDO_VERSION) return null;
  const seq = Number(bytes.readBigUInt64BE(12));
  const pageSize = bytes.readUInt32BE(20);
  const dbSizePages = bytes.readUInt32BE(24);
  const count = bytes.readUInt32BE(28);
  const body = REDO_HEADER_BYTES + count * (4 + pageSize);
  if (bytes.length !== body + REDO_DIGEST_BYTES) return null;
  const digest = createHash('sha256').update(bytes.subarray(0, body)).digest();
  if (!digest.equals(bytes.subarray(body))) return null;
  const pages: Redo['pages'] = [];
  for (let offset = REDO_HEADER_BYTES; offset < body; offset += 4 + pageSize) {
    pages.push({
      pgno: bytes.readUInt32BE(offset),
      data: bytes.subarray(offset + 4, offset + 4 + pageSize),
    });
  }
  if (invalidRedo(seq, pageSize, dbSizePages, pages) !== null) return null;
  return { seq, pageSize, dbSizePages, pages };
}

function patchHeader(page1: Buffer, counter: number): Buffer {
  page1[18] = 1;
  page1[19] = 1;
  page1.writeUInt32BE(counter, COUNTER_OFFSET);
  page1.writeUInt32BE(counter, VERSION_VALID_FOR_OFFSET);
  return page1;
}

/** A follower's header in place of `header` (patched in place): rollback mode, counters bumped. */
function adoptedHeader(header: Buffer): Buffer {
  return patchHeader(header, (header.readUInt32BE(COUNTER_OFFSET) + 1) >>> 0);
}

/** The page size in a database header: a 2-byte big-endian value where 1 means 65536. */
function pageSizeOf(header: Buffer): number {
  const raw = header.readUInt16BE(PAGE_SIZE_OFFSET);
  return raw === 1 ? 65536 : raw;
}

/** The first 100 bytes of the file, or null if it is shorter than a header. */
function readHeader(fd: number, size: number): Buffer | null {
  if (size < HEADER_BYTES) return null;
  const header = Buffer.alloc(HEADER_BYTES);
  let done = 0;
  while (done < HEADER_BYTES) {
    const read = fs.readSync(fd, header, done, HEADER_BYTES - done, done);
    if (read === 0) return null;
    done += read;
  }
  return header;
}

function writeAll(fd: number, data: Uint8Array, position: number): void {
  let done = 0;
  while (done < data.length) {
    done += fs.writeSync(fd, data, done, data.length - done, position + done);
  }
}

/**
 * Puts a file restored from a leader's image (which says WAL mode) into the follower's
 * rollback-journal mode, so read connections opened on it see every later apply. Returns the
 * page size its header gives (null when it is shorter than a header, and left as it is).
 */
export function adoptAsFollowerFile(path: string): number | null {
  const fd = fs.openSync(path, 'r+');
  try {
    const header = readHeader(fd, fs.fstatSync(fd).size);
    if (header === null) return null;
    writeAll(fd, adoptedHeader(header), 0);
    fs.fsyncSync(fd);
    return pageSizeOf(header);
  } finally {
    fs.closeSync(fd);
  }
}

/** {@link adoptAsFollowerFile} with its I/O (and its fsync) in the threadpool, off the event loop. */
export async function adoptAsFollowerFileAsync(path: string): Promise<number | null> {
  const file = await fsp.open(path, 'r+');
  try {
    const { size } = await file.stat();
    if (size < HEADER_BYTES) return null;
    const header = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await file.read(header, 0, HEADER_BYTES, 0);
    if (bytesRead < HEADER_BYTES) return null;
    await file.write(adoptedHeader(header), 0, HEADER_BYTES, 0);
    await file.sync();
    return pageSizeOf(header);
  } finally {
    await file.close();
  }
}
