import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { endianness } from 'node:os';
import { InvalidArgumentError, SqliteTooOldError, WalInvalidError } from '../../errors.ts';

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
const FIRST_READ_FRAMES = 16;
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
  if (bigEndian === HOST_BIG_ENDIAN) {
    // An Int32Array needs 4-byte alignment: `new Uint8Array` copies into a fresh, aligned buffer.
    const aligned = data.byteOffset % 4 === 0 ? data : new Uint8Array(data);
    const words = aligned.byteLength / 4;
    sumWords(new Int32Array(aligned.buffer, aligned.byteOffset, words), 0, words, s0, s1);
  } else {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    sumView(view, 0, data.byteLength, !bigEndian, s0, s1);
  }
  return [sumState(0), sumState(1)];
}

/**
 * Checksum words in the host's byte order (little-endian ones on x86 and ARM, which is what SQLite
 * writes there) are read through an Int32Array, several times faster than through a DataView.
 */
const HOST_BIG_ENDIAN = endianness() === 'BE';

/** Where {@link sumWords} and {@link sumView} leave (s0, s1): returning them would allocate. */
const sums = new Int32Array(2);

function sumState(index: 0 | 1): number {
  return (sums[index] as number) >>> 0;
}

/** The checksum of `words[from..to)` (host byte order) from (s0, s1), in int32 arithmetic. */
function sumWords(words: Int32Array, from: number, to: number, s0: number, s1: number): void {
  let a = s0 | 0;
  let b = s1 | 0;
  for (let i = from; i < to; i += 2) {
    a = (a + (words[i] as number) + b) | 0;
    b = (b + (words[i + 1] as number) + a) | 0;
  }
  sums[0] = a;
  sums[1] = b;
}

/** The checksum of bytes `[from..to)` of `view` from (s0, s1), words in the given byte order. */
function sumView(
  view: DataView,
  from: number,
  to: number,
  littleEndian: boolean,
  s0: number,
  s1: number,
): void {
  let a = s0 >>> 0;
  let b = s1 >>> 0;
  for (let i = from; i < to; i += 8) {
    a = (a + view.getUint32(i, littleEndian) + b) >>> 0;
    b = (b + view.getUint32(i + 4, littleEndian) + a) >>> 0;
  }
  sums[0] = a;
  sums[1] = b;
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
  /** Read no frame ending past this offset (a commit boundary read before): the same frames again. */
  until?: number,
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
    return readFrames(fd, header, size, start, restarted, until ?? Number.POSITIVE_INFINITY);
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

/**
 * Scans the frames from `start`, validating the checksum chain, then returns the pages of the last
 * committed version of each page number. A page is copied out of the read buffer only when that
 * buffer is about to be reused while it still holds the latest version of the page (or once at
 * the end), so pages rewritten by later frames — most frames, with small transactions — are never
 * copied, and every page returned is exactly the bytes that were checksummed.
 */
function readFrames(
  fd: number,
  header: WalHeader,
  size: number,
  start: { offset: number; s0: number; s1: number },
  restarted: boolean,
  until: number,
): CommittedFrames | null {
  const { pageSize, bigEndianChecksum, salt1, salt2 } = header;
  const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
  const frameWords = frameSize / 4;
  // No bigger than the frames the file holds now (a cursor at the end needs no 4 MiB buffer);
  // frames appended meanwhile are still read, by the next reads.
  const maxFrames = Math.max(
    1,
    Math.min(
      Math.floor(READ_CHUNK_BYTES / frameSize),
      Math.floor((size - start.offset) / frameSize),
    ),
  );
  // Small first, doubling while every frame read is valid: after a checkpoint SQLite rewrites the
  // WAL from the front without shrinking it, so what follows the last commit is usually stale
  // frames of the previous generation, not worth reading megabytes of.
  let chunkFrames = Math.min(maxFrames, FIRST_READ_FRAMES);
  // A fresh ArrayBuffer: offset 0, so every frame (its size a multiple of 8) is 4-byte aligned.
  let chunk = new Uint8Array(chunkFrames * frameSize);
  let view = new DataView(chunk.buffer);
  const wordsMatch = bigEndianChecksum === HOST_BIG_ENDIAN;
  let words = wordsMatch ? new Int32Array(chunk.buffer) : null;
  const littleEndian = !bigEndianChecksum;
  const copyPage = (at: number): Uint8Array =>
    chunk.slice(at + WAL_FRAME_HEADER_SIZE, at + frameSize);

  // The latest version of each page, by page number: the offset in `chunk` of its frame while
  // `chunk` holds it, else a copy. Numbers always refer to the current chunk's content.
  const committed = new Map<number, number | Uint8Array>();
  // Frames since the last commit: committed only once a commit frame follows them.
  const pending = new Map<number, number | Uint8Array>();
  const commitPending = (version: number | Uint8Array, pgno: number): void => {
    committed.set(pgno, version);
  };

  let offset = start.offset;
  let s0 = start.s0;
  let s1 = start.s1;
  let commits = 0;
  let lastOffset = -1;
  let lastS0 = 0;
  let lastS1 = 0;
  let lastDbSizePages = 0;

  reading: for (;;) {
    const got = Math.min(readFully(fd, chunk, offset), Math.max(0, until - offset));
    if (got < frameSize) break;
    for (let at = 0; at + frameSize <= got; at += frameSize) {
      const pgno = view.getUint32(at);
      const dbSizePages = view.getUint32(at + 4);
      if (pgno === 0 || view.getUint32(at + 8) !== salt1 || view.getUint32(at + 12) !== salt2) {
        break reading;
      }
      // The frame header's first 8 bytes, then the page.
      if (words !== null) {
        const w = at / 4;
        sumWords(words, w, w + 2, s0, s1);
        sumWords(
          words,
          w + WAL_FRAME_HEADER_SIZE / 4,
          w + frameWords,
          sums[0] as number,
          sums[1] as number,
        );
      } else {
        sumView(view, at, at + 8, littleEndian, s0, s1);
        sumView(
          view,
          at + WAL_FRAME_HEADER_SIZE,
          at + frameSize,
          littleEndian,
          sums[0] as number,
          sums[1] as number,
        );
      }
      const c0 = sumState(0);
      const c1 = sumState(1);
      if (c0 !== view.getUint32(at + 16) || c1 !== view.getUint32(at + 20)) break reading;
      s0 = c0;
      s1 = c1;
      offset += frameSize;
      pending.set(pgno, at);
      if (dbSizePages !== 0) {
        pending.forEach(commitPending);
        pending.clear();
        lastOffset = offset;
        lastS0 = s0;
        lastS1 = s1;
        lastDbSizePages = dbSizePages;
        commits++;
      }
    }
    if (got < chunk.byteLength) break;
    // Every frame of the chunk was valid, and the next read overwrites them: copy the pages
    // whose latest version (committed or pending) is still only here.
    for (let at = 0; at < got; at += frameSize) {
      const pgno = view.getUint32(at);
      if (pending.get(pgno) === at) pending.set(pgno, copyPage(at));
      else if (committed.get(pgno) === at) committed.set(pgno, copyPage(at));
    }
    if (chunkFrames < maxFrames) {
      chunkFrames = Math.min(maxFrames, chunkFrames * 2);
      chunk = new Uint8Array(chunkFrames * frameSize);
      view = new DataView(chunk.buffer);
      words = wordsMatch ? new Int32Array(chunk.buffer) : null;
    }
  }

  if (lastOffset < 0) return null;
  // Same order as `committed`: by the first commit of each page.
  const pages = new Map<number, Uint8Array>();
  for (const [pgno, version] of committed) {
    pages.set(pgno, typeof version === 'number' ? copyPage(version) : version);
  }
  return {
    pages,
    dbSizePages: lastDbSizePages,
    cursor: {
      offset: lastOffset,
      salt1,
      salt2,
      checksum1: lastS0,
      checksum2: lastS1,
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
function readFully(fd: number, buffer: Uint8Array, position: number): number {
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
