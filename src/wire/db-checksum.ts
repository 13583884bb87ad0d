import { hash } from 'node:crypto';
import type { DbChecksum } from '../api-types.ts';

/**
 * The end-to-end database checksum every changeset (format 2) and snapshot records: the sum mod
 * 2^64 of one 64-bit hash per page over pages 1..dbSizePages. A sum does not depend on order and
 * moves with each changed page (take the old hash away, add the new one), so leader and follower
 * keep it up to date from the pages a changeset carries, never rereading the whole file.
 *
 * Page hash: the first 8 bytes (big-endian) of SHA-256(u32 BE page number ‖ page bytes), with
 * the page-1 header bytes a follower owns set to zero (see {@link FOLLOWER_OWNED_HEADER_BYTES}),
 * so leader and follower copies of one state hash alike.
 */

/**
 * Bytes of page 1 the follower owns, so they differ from the leader's copy:
 * 18 and 19 (write/read format version) are forced to 1, rollback journal, so read-only
 * connections need no `-wal`/`-shm`; 24..27 (file change counter) and 92..95 (version-valid-for)
 * are bumped on every apply so open connections invalidate their page cache.
 */
export const FOLLOWER_OWNED_HEADER_BYTES: readonly number[] = Object.freeze([
  18, 19, 24, 25, 26, 27, 92, 93, 94, 95,
]);

export const DB_CHECKSUM_BYTES = 8;
const MOD = 1n << 64n;
const MASK = MOD - 1n;

/** The 16 lowercase hex digits of a checksum, as state files and manifests record it. */
export function dbChecksumHex(checksum: DbChecksum): string {
  return checksum.toString(16).padStart(16, '0');
}

/** A checksum from its 16 hex digits; undefined for anything else. */
export function parseDbChecksumHex(value: unknown): DbChecksum | undefined {
  return typeof value === 'string' && /^[0-9a-f]{16}$/.test(value)
    ? BigInt(`0x${value}`)
    : undefined;
}

/** Page number and page bytes side by side: one SHA-256 call, no per-page hash object. */
let scratch = Buffer.alloc(4 + 4096);

/** SHA-256(u32 BE pgno ‖ data). */
function sha256OfPage(pgno: number, data: Uint8Array): Buffer {
  if (scratch.length !== 4 + data.length) scratch = Buffer.alloc(4 + data.length);
  scratch.writeUInt32BE(pgno, 0);
  scratch.set(data, 4);
  return hash('sha256', scratch, 'buffer');
}

/**
 * Digests computed for a page's bytes, by the array holding them: a capture hashes its pages for
 * the database checksum, then sealing the changeset needs the same digests (and a follower the
 * other way round), so each page is hashed once.
 */
const digests = new WeakMap<Uint8Array, { pgno: number; digest: Buffer }>();

/**
 * SHA-256(u32 BE pgno ‖ data) of the page as it is: what a version-2 changeset's chain checksum
 * covers for each page. Remembered for the `data` array (pages are never changed in place).
 */
export function pageDigest(pgno: number, data: Uint8Array): Buffer {
  const known = digests.get(data);
  if (known !== undefined && known.pgno === pgno) return known.digest;
  const digest = sha256OfPage(pgno, data);
  digests.set(data, { pgno, digest });
  return digest;
}

/** The 64-bit hash of page `pgno` holding `data`. */
export function pageHash(pgno: number, data: Uint8Array): bigint {
  if (pgno !== 1) return pageDigest(pgno, data).readBigUInt64BE(0);
  const masked = Buffer.from(data);
  for (const offset of FOLLOWER_OWNED_HEADER_BYTES) {
    if (offset < masked.length) masked[offset] = 0;
  }
  return sha256OfPage(1, masked).readBigUInt64BE(0);
}

const zeroPages = new Map<number, Uint8Array>();

/** A page a grown database never wrote reads as zeros. */
function zeroPageHash(pgno: number, pageSize: number): bigint {
  let zeros = zeroPages.get(pageSize);
  if (!zeros) {
    zeros = new Uint8Array(pageSize);
    zeroPages.set(pageSize, zeros);
  }
  return pageHash(pgno, zeros);
}

/** The checksum of a whole image, computed from scratch. */
export function imageChecksum(pages: Iterable<[number, Uint8Array]>): DbChecksum {
  let sum = 0n;
  for (const [pgno, data] of pages) sum += pageHash(pgno, data);
  return sum & MASK;
}

/** New hashes of the pages one step changed, and the database's size after it. */
export interface PageHashUpdate {
  dbSizePages: number;
  pageSize: number;
  pgnos: Uint32Array;
  hashes: BigUint64Array;
}

/** Hashes the pages of one step (pages past `dbSizePages` are left out). */
export function hashPages(
  pages: Iterable<{ pgno: number; data: Uint8Array }> | ReadonlyMap<number, Uint8Array>,
  dbSizePages: number,
  pageSize: number,
): PageHashUpdate {
  const entries: [number, Uint8Array][] =
    pages instanceof Map
      ? [...(pages as ReadonlyMap<number, Uint8Array>)]
      : [...(pages as Iterable<{ pgno: number; data: Uint8Array }>)].map((p) => [p.pgno, p.data]);
  const kept = entries.filter(([pgno]) => pgno <= dbSizePages);
  const pgnos = new Uint32Array(kept.length);
  const hashes = new BigUint64Array(kept.length);
  kept.forEach(([pgno, data], i) => {
    pgnos[i] = pgno;
    hashes[i] = pageHash(pgno, data);
  });
  return { dbSizePages, pageSize, pgnos, hashes };
}

/**
 * The checksum after `update` of a database of `oldSizePages` pages with checksum `oldChecksum`,
 * given the hashes its pages had (`oldHash`, asked only for the pages the update changes or cuts).
 */
export function checksumAfter(
  oldChecksum: DbChecksum,
  oldSizePages: number,
  oldHash: (pgno: number) => bigint,
  update: PageHashUpdate,
): DbChecksum {
  const newSize = update.dbSizePages;
  let sum = oldChecksum;
  // Pages a shrink cut off drop out.
  for (let pgno = newSize + 1; pgno <= oldSizePages; pgno++) sum -= oldHash(pgno);
  const { pgnos, hashes } = update;
  for (let i = 0; i < pgnos.length; i++) {
    const pgno = pgnos[i] as number;
    if (pgno > newSize) continue;
    if (pgno <= oldSizePages) sum -= oldHash(pgno);
    sum += hashes[i] as bigint;
  }
  if (newSize > oldSizePages) {
    const written = new Set(pgnos);
    for (let pgno = oldSizePages + 1; pgno <= newSize; pgno++) {
      if (!written.has(pgno)) sum += zeroPageHash(pgno, update.pageSize);
    }
  }
  return ((sum % MOD) + MOD) & MASK;
}

/**
 * Every page's hash and their sum for one state of a database. The hashes live in a
 * SharedArrayBuffer so the capture worker reads them without a copy; only the owner changes them.
 */
export class PageHashes {
  #hashes: BigUint64Array;
  #dbSizePages: number;
  #sum: DbChecksum;

  private constructor(hashes: BigUint64Array, dbSizePages: number, sum: DbChecksum) {
    this.#hashes = hashes;
    this.#dbSizePages = dbSizePages;
    this.#sum = sum;
  }

  /** An empty database (no page). */
  static empty(): PageHashes {
    return new PageHashes(new BigUint64Array(new SharedArrayBuffer(0)), 0, 0n);
  }

  /** From hashes of pages 1..n in order. */
  static fromHashes(hashes: ArrayLike<bigint>): PageHashes {
    const array = new BigUint64Array(new SharedArrayBuffer(hashes.length * 8));
    let sum = 0n;
    for (let i = 0; i < hashes.length; i++) {
      array[i] = hashes[i] as bigint;
      sum += array[i] as bigint;
    }
    return new PageHashes(array, hashes.length, sum & MASK);
  }

  /** A read-only view another thread can use: see {@link checksumAfter}. */
  static view(shared: SharedPageHashes): PageHashes {
    return new PageHashes(
      new BigUint64Array(shared.buffer, 0, shared.dbSizePages),
      shared.dbSizePages,
      shared.sum,
    );
  }

  get checksum(): DbChecksum {
    return this.#sum;
  }

  get dbSizePages(): number {
    return this.#dbSizePages;
  }

  /** What a worker needs to compute {@link checksumAfter} (shares the buffer, copies nothing). */
  shared(): SharedPageHashes {
    return {
      buffer: this.#hashes.buffer as SharedArrayBuffer,
      dbSizePages: this.#dbSizePages,
      sum: this.#sum,
    };
  }

  /** The checksum after `update`, leaving this state as it is. */
  checksumAfter(update: PageHashUpdate): DbChecksum {
    const hashes = this.#hashes;
    return checksumAfter(
      this.#sum,
      this.#dbSizePages,
      (pgno) => hashes[pgno - 1] as bigint,
      update,
    );
  }

  /** Moves this state on by `update`; returns the new checksum. */
  apply(update: PageHashUpdate): DbChecksum {
    const sum = this.checksumAfter(update);
    const newSize = update.dbSizePages;
    if (newSize > this.#hashes.length) {
      const grown = new BigUint64Array(
        new SharedArrayBuffer(Math.max(newSize, this.#hashes.length * 2) * 8),
      );
      grown.set(this.#hashes.subarray(0, this.#dbSizePages));
      this.#hashes = grown;
    }
    const { pgnos, hashes } = update;
    if (newSize > this.#dbSizePages) {
      const written = new Set(pgnos);
      for (let pgno = this.#dbSizePages + 1; pgno <= newSize; pgno++) {
        if (!written.has(pgno)) this.#hashes[pgno - 1] = zeroPageHash(pgno, update.pageSize);
      }
    }
    for (let i = 0; i < pgnos.length; i++) {
      const pgno = pgnos[i] as number;
      if (pgno <= newSize) this.#hashes[pgno - 1] = hashes[i] as bigint;
    }
    this.#dbSizePages = newSize;
    this.#sum = sum;
    return sum;
  }
}

export interface SharedPageHashes {
  buffer: SharedArrayBuffer;
  dbSizePages: number;
  sum: DbChecksum;
}

/** The checksum of an image streamed in chunks of any size (pages numbered from 1). */
export class ImageChecksummer {
  readonly #pageSize: number;
  #partial: Uint8Array;
  #filled = 0;
  #pgno = 1;
  #sum = 0n;

  constructor(pageSize: number) {
    this.#pageSize = pageSize;
    this.#partial = new Uint8Array(pageSize);
  }

  update(chunk: Uint8Array): void {
    let offset = 0;
    if (this.#filled > 0) {
      const take = Math.min(this.#pageSize - this.#filled, chunk.length);
      this.#partial.set(chunk.subarray(0, take), this.#filled);
      this.#filled += take;
      offset = take;
      if (this.#filled < this.#pageSize) return;
      this.#add(this.#partial);
      this.#filled = 0;
    }
    for (; offset + this.#pageSize <= chunk.length; offset += this.#pageSize) {
      this.#add(chunk.subarray(offset, offset + this.#pageSize));
    }
    if (offset < chunk.length) {
      this.#partial.set(chunk.subarray(offset), 0);
      this.#filled = chunk.length - offset;
    }
  }

  #add(page: Uint8Array): void {
    this.#sum += pageHash(this.#pgno, page);
    this.#pgno += 1;
  }

  /** The checksum of the whole pages seen so far. */
  get checksum(): DbChecksum {
    return this.#sum & MASK;
  }
}
