import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { InvalidArgumentError, SqliteTooOldError, WalInvalidError } from '../../../errors.ts';

/**
 * Leader-side reader of SQLite's `-wal` file (https://www.sqlite.org/fileformat2.html#walformat).
 *
 * The WAL is a 32-byte header followed by frames (24-byte header + one page). A frame is valid
 * when its salts equal the header's and the cumulative checksum, seeded by the header checksum,
 * matches; valid content ends at the first frame that is not. Only frames up to the last commit
 * frame (non-zero db size) are a consistent database state, so only those are returned.
 *
 * The reader cannot see what SQLite checkpointed and then overwrote: the caller must read every
 * committed frame before it lets a checkpoint run, or the frames in between are lost to it.
 */

const WAL_MAGIC_LITTLE_ENDIAN = 0x377f0682;
const WAL_MAGIC_BIG_ENDIAN = 0x377f0683;
const WAL_FORMAT_VERSION = 3007000;
export const WAL_HEADER_SIZE = 32;
export const WAL_FRAME_HEADER_SIZE = 24;
/** Bounds memory per read call regardless of WAL size (but always at least one frame). */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;
/** The first release without the WAL-reset bug (see {@link SqliteTooOldError}). */
export const MIN_SQLITE_VERSION = '3.51.3';

export interface WalHeader {
  /** From the magic number: checksum words are big-endian (else little-endian). */
  bigEndianChecksum: boolean;
  pageSize: number;
  checkpointSeq: number;
  salt1: number;
  salt2: number;
  checksum1: number;
  checksum2: number;
}

/** Where reading stopped: just after the last commit frame read, with the checksum there. */
export interface WalCursor {
  offset: number;
  salt1: number;
  salt2: number;
  checksum1: number;
  checksum2: number;
  pageSize: number;
  checkpointSeq: number;
}

export interface CommittedFrames {
  /** The last committed version of each page written, by page number (1-based). */
  pages: Map<number, Uint8Array>;
  /** Database size in pages after the last commit read. */
  dbSizePages: number;
  cursor: WalCursor;
  /** SQLite restarted the WAL since `cursor`: frames were read from offset 32. */
  restarted: boolean;
  /** Commit frames (transactions) read. */
  commits: number;
}

/**
 * SQLite's WAL checksum over 32-bit words, continuing from (s0, s1).
 * `data.byteLength` must be a multiple of 8.
 */
export function walChecksum(
  data: Uint8Array,
  bigEndian: boolean,
  s0 = 0,
  s1 = 0,
): [number, number] {
  if (data.byteLength % 8 !== 0) {
    throw new InvalidArgumentError(`checksummed length ${data.byteLength} is not a multiple of 8`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const littleEndian = !bigEndian;
  let a = s0;
  let b = s1;
  for (let i = 0; i < data.byteLength; i += 8) {
    a = (a + view.getUint32(i, littleEndian) + b) >>> 0;
    b = (b + view.getUint32(i + 4, littleEndian) + a) >>> 0;
  }
  return [a, b];
}

/** Parses and validates a 32-byte WAL header. */
export function parseWalHeader(bytes: Uint8Array): WalHeader {
  if (bytes.byteLength < WAL_HEADER_SIZE) {
    throw new WalInvalidError(`header is ${bytes.byteLength} bytes, expected ${WAL_HEADER_SIZE}`);
  }
  // Header fields are big-endian whatever the checksum byte order is.
  const view = new DataView(bytes.buffer, bytes.byteOffset, WAL_HEADER_SIZE);
  const magic = view.getUint32(0);
  if (magic !== WAL_MAGIC_LITTLE_ENDIAN && magic !== WAL_MAGIC_BIG_ENDIAN) {
    throw new WalInvalidError(`bad magic number 0x${magic.toString(16)}`);
  }
  const version = view.getUint32(4);
  if (version !== WAL_FORMAT_VERSION) {
    throw new WalInvalidError(`unsupported WAL format version ${version}`);
  }
  const pageSize = view.getUint32(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) {
    throw new WalInvalidError(`bad page size ${pageSize}`);
  }
  const bigEndianChecksum = magic === WAL_MAGIC_BIG_ENDIAN;
  const checksum1 = view.getUint32(24);
  const checksum2 = view.getUint32(28);
  const [c1, c2] = walChecksum(bytes.subarray(0, 24), bigEndianChecksum);
  if (c1 !== checksum1 || c2 !== checksum2) {
    throw new WalInvalidError('header checksum mismatch');
  }
  return {
    bigEndianChecksum,
    pageSize,
    checkpointSeq: view.getUint32(12),
    salt1: view.getUint32(16),
    salt2: view.getUint32(20),
    checksum1,
    checksum2,
  };
}

/**
 * The WAL header, or null when there is none yet: SQLite creates the file lazily, and truncates
 * it to zero bytes on `wal_checkpoint(TRUNCATE)`.
 */
export function readWalHeader(walPath: string): WalHeader | null {
  const fd = openIfExists(walPath);
  if (fd === null) return null;
  try {
    return readHeader(fd, fstatSync(fd).size);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the frames committed after `cursor` (from the start when null or when SQLite restarted
 * the WAL). Returns null when there is no new commit — also right after a restart, which is then
 * reported with the first commit of the new WAL (the old cursor's salts still differ).
 *
 * Throws {@link WalInvalidError} when the header is invalid, or when the WAL has the cursor's
 * salts but is shorter than the cursor or has another page size: it was truncated or replaced
 * under us and the caller must take a new snapshot.
 */
export function readCommittedFrames(
  walPath: string,
  cursor: WalCursor | null,
): CommittedFrames | null {
  if (cursor !== null) assertCursorShape(cursor);
  const fd = openIfExists(walPath);
  if (fd === null) return null;
  try {
    const size = fstatSync(fd).size;
    const header = readHeader(fd, size);
    if (header === null) return null;

    const restarted =
      cursor !== null && (cursor.salt1 !== header.salt1 || cursor.salt2 !== header.salt2);
    let start = { offset: WAL_HEADER_SIZE, s0: header.checksum1, s1: header.checksum2 };
    if (cursor !== null && !restarted) {
      if (cursor.pageSize !== header.pageSize) {
        throw new WalInvalidError(
          `page size is ${header.pageSize} but was ${cursor.pageSize} with the same salts`,
        );
      }
      if (cursor.offset > size) {
        throw new WalInvalidError(
          `WAL is ${size} bytes but ${cursor.offset} bytes had been read with the same salts`,
        );
      }
      start = { offset: cursor.offset, s0: cursor.checksum1, s1: cursor.checksum2 };
    }
    return readFrames(fd, header, start, restarted);
  } finally {
    closeSync(fd);
  }
}

/** Throws {@link SqliteTooOldError} when `version` (e.g. `select sqlite_version()`) < `minimum`. */
export function assertSqliteVersion(version: string, minimum: string = MIN_SQLITE_VERSION): void {
  const have = parseVersion(version);
  const need = parseVersion(minimum);
  for (let i = 0; i < Math.max(have.length, need.length); i++) {
    const a = have[i] ?? 0;
    const b = need[i] ?? 0;
    if (a > b) return;
    if (a < b) throw new SqliteTooOldError(version, minimum);
  }
}

function parseVersion(version: string): number[] {
  if (!/^\d+(\.\d+)*$/.test(version)) {
    throw new InvalidArgumentError(`not a SQLite version: ${JSON.stringify(version)}`);
  }
  return version.split('.').map(Number);
}

function readFrames(
  fd: number,
  header: WalHeader,
  start: { offset: number; s0: number; s1: number },
  restarted: boolean,
): CommittedFrames | null {
  const { pageSize, bigEndianChecksum } = header;
  const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
  const chunk = Buffer.allocUnsafe(
    Math.max(1, Math.floor(READ_CHUNK_BYTES / frameSize)) * frameSize,
  );
  const view = new DataView(chunk.buffer, chunk.byteOffset, chunk.byteLength);

  const pages = new Map<number, Uint8Array>();
  // Frames since the last commit: returned only once a commit frame follows them.
  const pending = new Map<number, Uint8Array>();
  let offset = start.offset;
  let s0 = start.s0;
  let s1 = start.s1;
  let last: { offset: number; s0: number; s1: number; dbSizePages: number } | null = null;
  let commits = 0;

  reading: for (;;) {
    const got = readFully(fd, chunk, offset);
    if (got < frameSize) break;
    for (let at = 0; at + frameSize <= got; at += frameSize) {
      const pgno = view.getUint32(at);
      const dbSizePages = view.getUint32(at + 4);
      if (
        pgno === 0 ||
        view.getUint32(at + 8) !== header.salt1 ||
        view.getUint32(at + 12) !== header.salt2
      ) {
        break reading;
      }
      const [h0, h1] = walChecksum(chunk.subarray(at, at + 8), bigEndianChecksum, s0, s1);
      const page = chunk.subarray(at + WAL_FRAME_HEADER_SIZE, at + frameSize);
      const [c0, c1] = walChecksum(page, bigEndianChecksum, h0, h1);
      if (c0 !== view.getUint32(at + 16) || c1 !== view.getUint32(at + 20)) break reading;
      s0 = c0;
      s1 = c1;
      offset += frameSize;
      // Copy: the chunk buffer is reused for the next read.
      pending.set(pgno, new Uint8Array(page));
      if (dbSizePages !== 0) {
        for (const [n, data] of pending) pages.set(n, data);
        pending.clear();
        last = { offset, s0, s1, dbSizePages };
        commits++;
      }
    }
    if (got < chunk.byteLength) break;
  }

  if (last === null) return null;
  return {
    pages,
    dbSizePages: last.dbSizePages,
    cursor: {
      offset: last.offset,
      salt1: header.salt1,
      salt2: header.salt2,
      checksum1: last.s0,
      checksum2: last.s1,
      pageSize,
      checkpointSeq: header.checkpointSeq,
    },
    restarted,
    commits,
  };
}

function readHeader(fd: number, size: number): WalHeader | null {
  if (size < WAL_HEADER_SIZE) return null;
  const bytes = Buffer.alloc(WAL_HEADER_SIZE);
  // The file may shrink between fstat and read (TRUNCATE checkpoint): same as no header.
  if (readFully(fd, bytes, 0) < WAL_HEADER_SIZE) return null;
  return parseWalHeader(bytes);
}

/** Fills `buffer` from `position` unless end of file comes first; returns bytes read. */
function readFully(fd: number, buffer: Buffer, position: number): number {
  let done = 0;
  while (done < buffer.byteLength) {
    const n = readSync(fd, buffer, done, buffer.byteLength - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

function openIfExists(path: string): number | null {
  try {
    return openSync(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
}

function assertCursorShape(cursor: WalCursor): void {
  const { offset, pageSize } = cursor;
  const valid =
    Number.isSafeInteger(offset) &&
    Number.isSafeInteger(pageSize) &&
    pageSize >= 512 &&
    offset >= WAL_HEADER_SIZE &&
    (offset - WAL_HEADER_SIZE) % (WAL_FRAME_HEADER_SIZE + pageSize) === 0;
  if (!valid) {
    throw new InvalidArgumentError(`WAL cursor at ${offset} with page size ${pageSize}`);
  }
}
