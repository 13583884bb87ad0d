import { createHash } from 'node:crypto';
import {
  brotliCompressSync,
  brotliDecompressSync,
  crc32,
  deflateRawSync,
  inflateRawSync,
  constants as zlibConstants,
} from 'node:zlib';
import { Packr } from 'msgpackr';
import type { DbChecksum } from '../api-types.ts';
import { ChangesetError, InvalidArgumentError } from '../errors.ts';
import { DB_CHECKSUM_BYTES, pageDigest } from './db-checksum.ts';

/**
 * A changeset: the pages one or more committed SQLite transactions changed, as the leader shipped
 * them under `{prefix}/{db}/log/{seq}`. Chained: `checksum` covers `prevChecksum`, so a follower can
 * tell a gap, a fork or a replay from the next link.
 */
export interface Changeset {
  /** Format version of the encoding. */
  version: number;
  db: string;
  epoch: number;
  seq: number;
  /** Leader's wall-clock time of the commit, ms since 1970: used only for point-in-time restore. */
  commitTimeMs: number;
  /** Checksum of the previous changeset of this database (32 zero bytes before the first). */
  prevChecksum: Uint8Array;
  /** SHA-256 over prevChecksum, the header fields and the pages. */
  checksum: Uint8Array;
  pageSize: number;
  /** Size of the database in pages after this changeset. */
  dbSizePages: number;
  /** The last version of every page touched, in ascending page number. */
  pages: ChangedPage[];
  /**
   * Checksum of the whole database after this changeset (see `db-checksum.ts`); version 2 on.
   * Absent from changesets written before it existed: checks start where it is present.
   */
  dbChecksum?: DbChecksum;
}

export interface ChangedPage {
  pgno: number;
  data: Uint8Array;
}

/** Compression of changesets and snapshot parts; every reader decodes all three. */
export type ChangesetCodec = 'none' | 'deflate-raw' | 'brotli';

export const CHECKSUM_BYTES = 32;
/** The checksum a database's log starts from, before its first changeset. */
export const GENESIS_CHECKSUM: Uint8Array = new Uint8Array(CHECKSUM_BYTES);

/** Version of the changeset content (body `v`, and part of the checksum) without a database checksum. */
export const CHANGESET_VERSION = 1;
/** Version of a changeset that records `dbChecksum`. */
export const DB_CHECKSUM_CHANGESET_VERSION = 2;
/** Version of the binary frame around the body. */
export const CHANGESET_FRAME_VERSION = 1;
/** Neither the stored nor the inflated body may be larger: bounds what a hostile object can cost. */
export const MAX_CHANGESET_BODY_BYTES = 1024 * 1024 * 1024;

export interface EncodeChangesetOptions {
  /**
   * Default `'brotli'`: at quality 1 it compresses pages as well as deflate at level 1 or better,
   * four to five times faster, so compression keeps up with a leader writing flat out.
   */
  codec?: ChangesetCodec;
  /** deflate-raw: zlib level -1..9; brotli: quality 0..11. Default 1 for both. */
  level?: number;
  /**
   * Ships the body uncompressed (codec `'none'`) when compressing a sample from its middle saves
   * less than this fraction of it, 0 to 1. Default 0: always compress. Random or already
   * compressed data costs the whole compression time and saves little.
   */
  minSavings?: number;
}

/** The slice of a body compressed to judge `minSavings`; smaller bodies are judged whole. */
const SAVINGS_SAMPLE_BYTES = 64 * 1024;

/** What the reader already knows; any disagreement is an error of its own code. */
export interface ChangesetExpectation {
  db?: string;
  pageSize?: number;
  /** The seq the reader needs next. */
  seq?: number;
  /** Checksum of the last changeset the reader applied. */
  prevChecksum?: Uint8Array;
}

// Frame: magic(4) | frame version(1) | codec id(1) | body length(4, BE) | CRC32 of body(4, BE) | body
const MAGIC = new Uint8Array([0x48, 0x41, 0x44, 0x42]); // 'HADB'
const VERSION_OFFSET = 4;
const CODEC_OFFSET = 5;
const LENGTH_OFFSET = 6;
const CRC_OFFSET = 10;
const HEADER_BYTES = 14;

const CODEC_IDS: Record<ChangesetCodec, number> = { none: 0, 'deflate-raw': 1, brotli: 2 };
const CODECS_BY_ID: ReadonlyMap<number, ChangesetCodec> = new Map(
  Object.entries(CODEC_IDS).map(([codec, id]) => [id, codec as ChangesetCodec]),
);

const MIN_PAGE_SIZE = 512;
const MAX_PAGE_SIZE = 65536;
/** SQLite's own limit on the number of pages in a database. */
const MAX_PAGE_COUNT = 4294967294;
const BODY_KEYS = [
  'v',
  'db',
  'epoch',
  'seq',
  'commitTimeMs',
  'prevChecksum',
  'checksum',
  'pageSize',
  'dbSizePages',
  'pages',
  'dbChecksum',
] as const;

// Records and typed-array extensions are msgpackr-only; plain maps and bin keep the body readable by
// any msgpack library. copyBuffers so decoded pages never pin (or alias) the caller's input.
const packr = new Packr({
  useRecords: false,
  moreTypes: false,
  structuredClone: false,
  bundleStrings: false,
  variableMapSize: true,
  mapsAsObjects: true,
  int64AsType: 'number',
  copyBuffers: true,
});

/**
 * Seals a changeset: computes its checksum and encodes it into the framed wire format.
 *
 * The returned `changeset` shares page data with `input`; `bytes` is independent of both.
 *
 * @example
 * ```ts
 * const first = encodeChangeset({
 *   db: 'orders', epoch: 1, seq: 1, commitTimeMs: Date.now(), prevChecksum: GENESIS_CHECKSUM,
 *   pageSize: 4096, dbSizePages: 2, pages: [{ pgno: 1, data: page1 }, { pgno: 2, data: page2 }],
 * });
 * await storage.put(`${prefix}/orders/log/1`, first.bytes);
 * // The next link starts from this one's checksum.
 * const second = encodeChangeset({ ...next, seq: 2, prevChecksum: first.changeset.checksum });
 * ```
 *
 * @throws InvalidArgumentError if the input is not a well-formed changeset or options are invalid.
 */
export function encodeChangeset(
  input: Omit<Changeset, 'checksum' | 'version'>,
  options: EncodeChangesetOptions = {},
): { bytes: Uint8Array; changeset: Changeset } {
  const minSavings = options.minSavings ?? 0;
  if (!(minSavings >= 0 && minSavings <= 1)) {
    throw new InvalidArgumentError(`minSavings must be a fraction from 0 to 1, got ${minSavings}`);
  }
  const { changeset, packed, codec, level } = seal(input, options);
  // Judged on a sample from the middle, or on the whole body when it is small.
  const judged = codec !== 'none' && minSavings > 0;
  const whole = packed.length <= 2 * SAVINGS_SAMPLE_BYTES;
  if (judged && !whole) {
    const start = (packed.length - SAVINGS_SAMPLE_BYTES) >> 1;
    const sample = packed.subarray(start, start + SAVINGS_SAMPLE_BYTES);
    if (!savesEnough(sample, compress(sample, codec, level), minSavings)) {
      return { bytes: frame(packed, 'none'), changeset };
    }
  }
  const body = compress(packed, codec, level);
  if (judged && whole && !savesEnough(packed, body, minSavings)) {
    return { bytes: frame(packed, 'none'), changeset };
  }
  return { bytes: frame(body, codec), changeset };
}

function savesEnough(raw: Uint8Array, compressed: Uint8Array, minSavings: number): boolean {
  return compressed.length <= raw.length * (1 - minSavings);
}

function compress(packed: Uint8Array, codec: ChangesetCodec, level: number): Uint8Array {
  if (codec === 'deflate-raw') return deflateRawSync(packed, { level });
  if (codec === 'brotli') return brotliCompressSync(packed, brotliOptions(level, packed.length));
  return packed;
}

/** Brotli at `quality`, told the input's size up front (it picks its window from that). */
export function brotliOptions(quality: number, sizeHint: number) {
  return {
    params: {
      [zlibConstants.BROTLI_PARAM_QUALITY]: quality,
      [zlibConstants.BROTLI_PARAM_SIZE_HINT]: sizeHint,
    },
  };
}

/** Validates, checksums and packs a changeset: everything but compression and framing. */
function seal(input: Omit<Changeset, 'checksum' | 'version'>, options: EncodeChangesetOptions) {
  const { codec = 'brotli', level = 1 } = options;
  if (!Object.hasOwn(CODEC_IDS, codec)) {
    throw new InvalidArgumentError(`unknown changeset codec ${JSON.stringify(codec)}`);
  }
  const [minLevel, maxLevel] = codec === 'brotli' ? [0, 11] : [-1, 9];
  if (!Number.isInteger(level) || level < minLevel || level > maxLevel) {
    throw new InvalidArgumentError(
      `${codec} compression level must be an integer in ${minLevel}..${maxLevel}, got ${level}`,
    );
  }
  const problem = changesetProblem(input);
  if (problem !== undefined) throw new InvalidArgumentError(`invalid changeset: ${problem}`);

  const version =
    input.dbChecksum === undefined ? CHANGESET_VERSION : DB_CHECKSUM_CHANGESET_VERSION;
  const changeset: Changeset = {
    version,
    db: input.db,
    epoch: input.epoch,
    seq: input.seq,
    commitTimeMs: input.commitTimeMs,
    prevChecksum: input.prevChecksum,
    checksum: computeChecksum({ ...input, version }),
    pageSize: input.pageSize,
    dbSizePages: input.dbSizePages,
    pages: input.pages.map(({ pgno, data }) => ({ pgno, data })),
    ...(input.dbChecksum === undefined ? {} : { dbChecksum: input.dbChecksum }),
  };

  const packed = packBody(changeset);
  if (packed.length > MAX_CHANGESET_BODY_BYTES) {
    throw new InvalidArgumentError(
      `changeset body is ${packed.length} bytes, more than ${MAX_CHANGESET_BODY_BYTES}`,
    );
  }
  return { changeset, packed, codec, level };
}

function frame(body: Uint8Array, codec: ChangesetCodec): Uint8Array {
  const bytes = new Uint8Array(HEADER_BYTES + body.length);
  const view = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  bytes[VERSION_OFFSET] = CHANGESET_FRAME_VERSION;
  bytes[CODEC_OFFSET] = CODEC_IDS[codec];
  view.setUint32(LENGTH_OFFSET, body.length);
  view.setUint32(CRC_OFFSET, crc32(body));
  bytes.set(body, HEADER_BYTES);
  return bytes;
}

/**
 * Decodes and verifies a changeset: frame, CRC, body shape, checksum, then `expect`.
 * The returned page data are fresh copies, never views into `bytes`.
 *
 * @example
 * ```ts
 * const changeset = decodeChangeset(await storage.get(`${prefix}/orders/log/${seq}`), {
 *   db: 'orders', pageSize: 4096, seq, prevChecksum: lastApplied.checksum,
 * });
 * ```
 *
 * @throws ChangesetError with code
 * - `CHANGESET_CORRUPT`: damaged or truncated bytes, or content hadb would never write;
 * - `CHANGESET_UNKNOWN_VERSION`: a frame version, codec or body version this hadb cannot read;
 * - `CHANGESET_CHECKSUM_MISMATCH`: intact framing but content that does not match its checksum;
 * - `CHANGESET_WRONG_DATABASE` / `CHANGESET_WRONG_PAGE_SIZE`: differs from `expect.db` / `expect.pageSize`;
 * - `CHANGESET_CHAIN_BROKEN`: not the link after `expect.prevChecksum`, or not `expect.seq`.
 * @throws InvalidArgumentError if `expect` itself is malformed.
 */
export function decodeChangeset(bytes: Uint8Array, expect: ChangesetExpectation = {}): Changeset {
  if (expect.prevChecksum !== undefined && !isChecksum(expect.prevChecksum)) {
    throw new InvalidArgumentError(`expected prevChecksum must be ${CHECKSUM_BYTES} bytes`);
  }
  const changeset = parseBody(unframe(bytes));

  const recomputed = computeChecksum(changeset);
  if (!checksumsEqual(recomputed, changeset.checksum)) {
    throw new ChangesetError(
      'CHANGESET_CHECKSUM_MISMATCH',
      `changeset ${changeset.db} seq ${changeset.seq} claims checksum ${hex(changeset.checksum)} but its content hashes to ${hex(recomputed)}`,
    );
  }

  if (expect.db !== undefined && changeset.db !== expect.db) {
    throw new ChangesetError(
      'CHANGESET_WRONG_DATABASE',
      `changeset belongs to database ${JSON.stringify(changeset.db)}, expected ${JSON.stringify(expect.db)}`,
    );
  }
  if (expect.pageSize !== undefined && changeset.pageSize !== expect.pageSize) {
    throw new ChangesetError(
      'CHANGESET_WRONG_PAGE_SIZE',
      `changeset has page size ${changeset.pageSize}, expected ${expect.pageSize}`,
    );
  }
  if (expect.seq !== undefined && changeset.seq !== expect.seq) {
    throw new ChangesetError(
      'CHANGESET_CHAIN_BROKEN',
      `changeset has seq ${changeset.seq}, expected seq ${expect.seq}`,
    );
  }
  if (
    expect.prevChecksum !== undefined &&
    !checksumsEqual(changeset.prevChecksum, expect.prevChecksum)
  ) {
    throw new ChangesetError(
      'CHANGESET_CHAIN_BROKEN',
      `changeset seq ${changeset.seq} follows checksum ${hex(changeset.prevChecksum)}, expected it to follow ${hex(expect.prevChecksum)}`,
    );
  }
  return changeset;
}

/** True if both checksums hold the same bytes (not constant-time: checksums are not secrets). */
export function checksumsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Checks the frame and returns the plain msgpack body. */
function unframe(bytes: Uint8Array): Uint8Array {
  // Magic and version first: a later frame version may have a different header length.
  if (bytes.length < CODEC_OFFSET) throw corrupt(`only ${bytes.length} bytes, truncated header`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw corrupt('bad magic, not a hadb changeset');
  }
  const frameVersion = bytes[VERSION_OFFSET];
  if (frameVersion !== CHANGESET_FRAME_VERSION) {
    throw new ChangesetError(
      'CHANGESET_UNKNOWN_VERSION',
      `frame version ${frameVersion} is not supported (this hadb reads version ${CHANGESET_FRAME_VERSION})`,
    );
  }
  if (bytes.length < HEADER_BYTES) throw corrupt(`only ${bytes.length} bytes, truncated header`);
  const codecId = bytes[CODEC_OFFSET] as number;
  const codec = CODECS_BY_ID.get(codecId);
  if (codec === undefined) {
    throw new ChangesetError('CHANGESET_UNKNOWN_VERSION', `unknown codec id ${codecId}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const bodyLength = view.getUint32(LENGTH_OFFSET);
  if (bodyLength > MAX_CHANGESET_BODY_BYTES) {
    throw corrupt(`body length ${bodyLength} exceeds the limit of ${MAX_CHANGESET_BODY_BYTES}`);
  }
  if (HEADER_BYTES + bodyLength !== bytes.length) {
    throw corrupt(
      `header says ${bodyLength} body bytes but ${bytes.length - HEADER_BYTES} follow the header`,
    );
  }
  const body = bytes.subarray(HEADER_BYTES);
  if (crc32(body) !== view.getUint32(CRC_OFFSET)) throw corrupt('body CRC32 mismatch');
  if (codec === 'none') return body;
  try {
    return codec === 'brotli'
      ? brotliDecompressSync(body, { maxOutputLength: MAX_CHANGESET_BODY_BYTES })
      : inflateRawSync(body, { maxOutputLength: MAX_CHANGESET_BODY_BYTES });
  } catch (cause) {
    throw corrupt(`body does not decompress (${codec})`, cause);
  }
}

function parseBody(packed: Uint8Array): Changeset {
  let fields: unknown;
  try {
    fields = packr.unpack(packed);
  } catch (cause) {
    throw corrupt('body is not valid msgpack', cause);
  }
  // Extensions decode to class instances (Date, Map, C1Type...); only a plain map is a body.
  if (
    typeof fields !== 'object' ||
    fields === null ||
    Object.getPrototypeOf(fields) !== Object.prototype
  ) {
    throw corrupt('body is not a msgpack map');
  }
  const body = fields as Record<string, unknown>;
  if (!Number.isSafeInteger(body.v)) throw corrupt('body has no version');
  // Before the shape check: another version may have other fields.
  if (body.v !== CHANGESET_VERSION && body.v !== DB_CHECKSUM_CHANGESET_VERSION) {
    throw new ChangesetError(
      'CHANGESET_UNKNOWN_VERSION',
      `changeset version ${JSON.stringify(body.v)} is not supported (this hadb reads versions ${CHANGESET_VERSION} and ${DB_CHECKSUM_CHANGESET_VERSION})`,
    );
  }
  const version = body.v as number;
  let dbChecksum: DbChecksum | undefined;
  if (version === DB_CHECKSUM_CHANGESET_VERSION) {
    const raw = body.dbChecksum;
    if (!(raw instanceof Uint8Array) || raw.length !== DB_CHECKSUM_BYTES) {
      throw corrupt(`dbChecksum must be ${DB_CHECKSUM_BYTES} bytes`);
    }
    dbChecksum = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).readBigUInt64BE(0);
  } else if ('dbChecksum' in body) {
    throw corrupt(`a version ${version} changeset has no dbChecksum`);
  }
  // Keys outside the checksum would be unverified content.
  const extra = Object.keys(body).filter((key) => !(BODY_KEYS as readonly string[]).includes(key));
  if (extra.length > 0) throw corrupt(`unexpected fields ${extra.join(', ')}`);

  if (!Array.isArray(body.pages)) throw corrupt('pages must be an array');
  const pages: ChangedPage[] = [];
  for (const [index, entry] of (body.pages as unknown[]).entries()) {
    if (!Array.isArray(entry) || entry.length !== 2) {
      throw corrupt(`pages[${index}] must be a [pgno, bytes] pair`);
    }
    pages.push({ pgno: entry[0] as number, data: entry[1] as Uint8Array });
  }
  const changeset: Changeset = {
    version,
    db: body.db as string,
    epoch: body.epoch as number,
    seq: body.seq as number,
    commitTimeMs: body.commitTimeMs as number,
    prevChecksum: body.prevChecksum as Uint8Array,
    checksum: body.checksum as Uint8Array,
    pageSize: body.pageSize as number,
    dbSizePages: body.dbSizePages as number,
    pages,
    ...(dbChecksum === undefined ? {} : { dbChecksum }),
  };
  const problem = changesetProblem(changeset) ?? checksumProblem('checksum', changeset.checksum);
  if (problem !== undefined) throw corrupt(problem);
  return changeset;
}

/**
 * Everything a changeset must satisfy, shared by encode (caller's mistake) and decode (corruption).
 * Checks types too: decode runs it on unvalidated msgpack, encode may be called from plain JS.
 */
function changesetProblem(input: Omit<Changeset, 'checksum' | 'version'>): string | undefined {
  const { db, epoch, seq, commitTimeMs, prevChecksum, pageSize, dbSizePages, pages } = input;
  if (typeof db !== 'string' || db === '') return 'db must be a non-empty string';
  // Lone surrogates would not survive UTF-8, so the db would not round trip.
  if (Buffer.from(db, 'utf8').toString('utf8') !== db) return 'db must be well-formed Unicode';
  if (!isIntegerIn(epoch, 1, Number.MAX_SAFE_INTEGER)) return 'epoch must be a positive integer';
  if (!isIntegerIn(seq, 1, Number.MAX_SAFE_INTEGER)) return 'seq must be a positive integer';
  if (!isIntegerIn(commitTimeMs, 0, Number.MAX_SAFE_INTEGER)) {
    return 'commitTimeMs must be a non-negative integer';
  }
  const prevProblem = checksumProblem('prevChecksum', prevChecksum);
  if (prevProblem !== undefined) return prevProblem;
  if (!isIntegerIn(pageSize, MIN_PAGE_SIZE, MAX_PAGE_SIZE) || (pageSize & (pageSize - 1)) !== 0) {
    return `pageSize must be a power of two in ${MIN_PAGE_SIZE}..${MAX_PAGE_SIZE}, got ${pageSize}`;
  }
  if (!isIntegerIn(dbSizePages, 1, MAX_PAGE_COUNT)) {
    return `dbSizePages must be an integer in 1..${MAX_PAGE_COUNT}`;
  }
  const { dbChecksum } = input;
  if (
    dbChecksum !== undefined &&
    (typeof dbChecksum !== 'bigint' || dbChecksum < 0n || dbChecksum >= 1n << 64n)
  ) {
    return 'dbChecksum must be a bigint in 0..2^64-1';
  }
  if (!Array.isArray(pages)) return 'pages must be an array';
  let previousPgno = 0;
  for (const [index, page] of pages.entries()) {
    if (typeof page !== 'object' || page === null) return `pages[${index}] must be a page`;
    const { pgno, data } = page;
    if (!isIntegerIn(pgno, 1, dbSizePages)) {
      return `pages[${index}].pgno must be an integer in 1..dbSizePages (${dbSizePages}), got ${pgno}`;
    }
    if (pgno <= previousPgno) {
      return `page numbers must be strictly ascending, but ${pgno} follows ${previousPgno}`;
    }
    previousPgno = pgno;
    if (!(data instanceof Uint8Array)) return `pages[${index}].data must be a Uint8Array`;
    if (data.length !== pageSize) {
      return `page ${pgno} has ${data.length} bytes, expected the page size ${pageSize}`;
    }
  }
  return undefined;
}

function checksumProblem(name: string, value: unknown): string | undefined {
  return isChecksum(value) ? undefined : `${name} must be ${CHECKSUM_BYTES} bytes`;
}

function isChecksum(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array && value.length === CHECKSUM_BYTES;
}

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return Number.isSafeInteger(value) && (value as number) >= min && (value as number) <= max;
}

/**
 * SHA-256 over prevChecksum then a fixed-width, length-prefixed serialization of the content, so no
 * two different changesets hash the same bytes. Independent of msgpack's choice of integer widths.
 * Version 2 adds the 8 bytes of `dbChecksum` right after the fixed-width header, and takes each
 * page as SHA-256(u32 BE pgno ‖ bytes) instead of its bytes.
 */
function computeChecksum(changeset: Omit<Changeset, 'checksum'>): Uint8Array {
  const hash = createHash('sha256');
  hash.update(changeset.prevChecksum);
  const db = Buffer.from(changeset.db, 'utf8');
  const header = new DataView(new ArrayBuffer(4 + 4 + 8 + 8 + 8 + 4 + 4));
  header.setUint32(0, changeset.version);
  header.setUint32(4, db.length);
  header.setBigUint64(8, BigInt(changeset.epoch));
  header.setBigUint64(16, BigInt(changeset.seq));
  header.setBigUint64(24, BigInt(changeset.commitTimeMs));
  header.setUint32(32, changeset.pageSize);
  header.setUint32(36, changeset.dbSizePages);
  hash.update(header);
  if (changeset.version >= DB_CHECKSUM_CHANGESET_VERSION) {
    hash.update(dbChecksumBytes(changeset.dbChecksum ?? 0n));
  }
  hash.update(db);
  const count = new DataView(new ArrayBuffer(4));
  count.setUint32(0, changeset.pages.length);
  hash.update(count);
  const pageHeader = new DataView(new ArrayBuffer(8));
  // Version 2 hashes each page's digest: the same digests give the database checksum, so the
  // pages are hashed once for both.
  const digested = changeset.version >= DB_CHECKSUM_CHANGESET_VERSION;
  for (const { pgno, data } of changeset.pages) {
    pageHeader.setUint32(0, pgno);
    pageHeader.setUint32(4, data.length);
    hash.update(pageHeader);
    hash.update(digested ? pageDigest(pgno, data) : data);
  }
  return new Uint8Array(hash.digest());
}

/**
 * The body as a msgpack map (what msgpackr reads back), written in one pass into a buffer of the
 * exact size: pages are copied once. Integers beyond 32 bits go as int64 (as msgpackr writes a
 * bigint), not float64, for non-JS readers.
 */
function packBody(changeset: Changeset): Uint8Array {
  const db = Buffer.from(changeset.db, 'utf8');
  const fields: [string, number | Uint8Array][] = [
    ['v', changeset.version],
    ['db', db],
    ['epoch', changeset.epoch],
    ['seq', changeset.seq],
    ['commitTimeMs', changeset.commitTimeMs],
    ['prevChecksum', changeset.prevChecksum],
    ['checksum', changeset.checksum],
    ['pageSize', changeset.pageSize],
    ['dbSizePages', changeset.dbSizePages],
  ];
  if (changeset.dbChecksum !== undefined) {
    fields.push(['dbChecksum', dbChecksumBytes(changeset.dbChecksum)]);
  }
  const { pages } = changeset;
  let size = 1 + arrayHeaderSize(pages.length);
  for (const [key, value] of fields) {
    size += 1 + key.length;
    size +=
      typeof value === 'number'
        ? uintSize(value)
        : value === db
          ? strHeaderSize(db.length) + db.length
          : binHeaderSize(value.length) + value.length;
  }
  size += 1 + 'pages'.length;
  for (const { pgno, data } of pages) {
    size += 1 + uintSize(pgno) + binHeaderSize(data.length) + data.length;
  }
  const out = Buffer.allocUnsafe(size);
  let at = out.writeUInt8(0x80 | (fields.length + 1), 0);
  const key = (name: string) => {
    at = out.writeUInt8(0xa0 | name.length, at);
    at += out.write(name, at, 'latin1');
  };
  const uint = (value: number) => {
    if (value < 0x80) at = out.writeUInt8(value, at);
    else if (value <= 0xff) at = out.writeUInt8(value, out.writeUInt8(0xcc, at));
    else if (value <= 0xffff) at = out.writeUInt16BE(value, out.writeUInt8(0xcd, at));
    else if (value <= 0xffffffff) at = out.writeUInt32BE(value, out.writeUInt8(0xce, at));
    else at = out.writeBigInt64BE(BigInt(value), out.writeUInt8(0xd3, at));
  };
  const bytes = (data: Uint8Array, header: (length: number) => void) => {
    header(data.length);
    out.set(data, at);
    at += data.length;
  };
  const binHeader = (length: number) => {
    if (length <= 0xff) at = out.writeUInt8(length, out.writeUInt8(0xc4, at));
    else if (length <= 0xffff) at = out.writeUInt16BE(length, out.writeUInt8(0xc5, at));
    else at = out.writeUInt32BE(length, out.writeUInt8(0xc6, at));
  };
  const strHeader = (length: number) => {
    if (length < 32) at = out.writeUInt8(0xa0 | length, at);
    else if (length <= 0xff) at = out.writeUInt8(length, out.writeUInt8(0xd9, at));
    else if (length <= 0xffff) at = out.writeUInt16BE(length, out.writeUInt8(0xda, at));
    else at = out.writeUInt32BE(length, out.writeUInt8(0xdb, at));
  };
  for (const [name, value] of fields) {
    key(name);
    if (typeof value === 'number') uint(value);
    else bytes(value, value === db ? strHeader : binHeader);
  }
  key('pages');
  if (pages.length < 16) at = out.writeUInt8(0x90 | pages.length, at);
  else if (pages.length <= 0xffff) at = out.writeUInt16BE(pages.length, out.writeUInt8(0xdc, at));
  else at = out.writeUInt32BE(pages.length, out.writeUInt8(0xdd, at));
  for (const { pgno, data } of pages) {
    at = out.writeUInt8(0x92, at);
    uint(pgno);
    bytes(data, binHeader);
  }
  return out;
}

function dbChecksumBytes(checksum: DbChecksum): Uint8Array {
  const bytes = Buffer.alloc(DB_CHECKSUM_BYTES);
  bytes.writeBigUInt64BE(checksum, 0);
  return bytes;
}

function uintSize(value: number): number {
  return value < 0x80 ? 1 : value <= 0xff ? 2 : value <= 0xffff ? 3 : value <= 0xffffffff ? 5 : 9;
}

function binHeaderSize(length: number): number {
  return length <= 0xff ? 2 : length <= 0xffff ? 3 : 5;
}

function strHeaderSize(length: number): number {
  return length < 32 ? 1 : length <= 0xff ? 2 : length <= 0xffff ? 3 : 5;
}

function arrayHeaderSize(length: number): number {
  return length < 16 ? 1 : length <= 0xffff ? 3 : 5;
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

function corrupt(why: string, cause?: unknown): ChangesetError {
  return new ChangesetError(
    'CHANGESET_CORRUPT',
    `corrupt changeset: ${why}`,
    cause === undefined ? undefined : { cause },
  );
}
