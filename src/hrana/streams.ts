/**
 * Hrana streams held on this node: each parked under its baton between requests until it is idle
 * too long (its open transaction then rolled back), within bounds on streams in all, per client,
 * and on the SQL texts one stream stores.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IsolatedTransaction } from '../api-types.ts';
import { HranaRequestError, LimitExceededError } from '../errors.ts';

/** Streams held on one node at most. */
const MAX_STREAMS = 10_000;
/**
 * Streams one client may hold open at once. A client is its remote address: every client shares
 * the one auth token, so a cap per token would only be the node-wide one.
 */
export const MAX_STREAMS_PER_CLIENT = 100;
/** SQL texts one stream may store (`store_sql`), by count and by their total UTF-8 bytes. */
export const MAX_STORED_SQL_COUNT = 100;
export const MAX_STORED_SQL_BYTES = 1024 * 1024;

export interface Stream {
  db: string;
  sqls: Map<number, string>;
  /** UTF-8 bytes of `sqls`. */
  sqlBytes: number;
  /** Who opened it (a remote address), for the cap per client; counted while it is held here. */
  client: string;
  counted: boolean;
  /** The open interactive transaction (only ever on the leader), or a dead one not yet ended. */
  tx: IsolatedTransaction | null;
  timer: NodeJS.Timeout | undefined;
}

/** A stream not held yet, with the SQL texts it stored elsewhere (a relayed one). */
export function newStream(db: string, stored: Iterable<[number, string]>, client: string): Stream {
  const sqls = new Map(stored);
  let sqlBytes = 0;
  for (const sql of sqls.values()) sqlBytes += Buffer.byteLength(sql);
  return { db, sqls, sqlBytes, client, counted: false, tx: null, timer: undefined };
}

/** Stores `sql` as `sqlId` on the stream, within its bounds. */
export function storeSql(stream: Stream, sqlId: number, sql: string): void {
  if (stream.sqls.has(sqlId)) {
    throw new HranaRequestError('SQL_ID_IN_USE', `sql_id ${sqlId} is already in use`);
  }
  if (stream.sqls.size >= MAX_STORED_SQL_COUNT) {
    throw new LimitExceededError(
      `a stream stores at most ${MAX_STORED_SQL_COUNT} SQL texts; close_sql one first`,
    );
  }
  const bytes = Buffer.byteLength(sql);
  if (stream.sqlBytes + bytes > MAX_STORED_SQL_BYTES) {
    throw new LimitExceededError(
      `a stream stores at most ${MAX_STORED_SQL_BYTES} bytes of SQL text (${stream.sqlBytes} ` +
        `stored, ${bytes} more asked); close_sql some, or send the SQL with the statement`,
    );
  }
  stream.sqls.set(sqlId, sql);
  stream.sqlBytes += bytes;
}

export function closeSql(stream: Stream, sqlId: unknown): void {
  const stored = typeof sqlId === 'number' ? stream.sqls.get(sqlId) : undefined;
  if (stored !== undefined) {
    stream.sqls.delete(sqlId as number);
    stream.sqlBytes -= Buffer.byteLength(stored);
  }
}

/** The streams parked on this node under their batons, and how many each client holds. */
export class StreamTable {
  readonly #streams = new Map<string, Stream>();
  readonly #streamsOf = new Map<string, number>();
  readonly #idleMs: number;
  readonly #maxPerClient: number;

  constructor(idleMs: number, maxPerClient: number) {
    this.#idleMs = idleMs;
    this.#maxPerClient = maxPerClient;
  }

  /** Whether no more streams may be held on this node. */
  get full(): boolean {
    return this.#streams.size >= MAX_STREAMS;
  }

  /** Whether `stream`, not held yet, would take its client past its cap. */
  overClientCap(stream: Stream): boolean {
    return !stream.counted && (this.#streamsOf.get(stream.client) ?? 0) >= this.#maxPerClient;
  }

  /** The stream parked under `baton` for `db`, taken out for a request; undefined if none. */
  take(baton: string, db: string): Stream | undefined {
    const found = this.#streams.get(baton);
    if (!found || found.db !== db) return undefined;
    this.#streams.delete(baton);
    clearTimeout(found.timer);
    return found;
  }

  /** Keeps the stream for its next request, until it is idle too long. */
  park(baton: string, stream: Stream): void {
    stream.timer = setTimeout(() => {
      this.#streams.delete(baton);
      this.forget(stream);
      void stream.tx?.abort(`the stream was idle for ${this.#idleMs} ms`);
    }, this.#idleMs);
    stream.timer.unref();
    this.#streams.set(baton, stream);
    if (!stream.counted) {
      stream.counted = true;
      this.#streamsOf.set(stream.client, (this.#streamsOf.get(stream.client) ?? 0) + 1);
    }
  }

  /** The stream is no longer held here: it no longer counts against its client. */
  forget(stream: Stream): void {
    if (!stream.counted) return;
    stream.counted = false;
    const left = (this.#streamsOf.get(stream.client) ?? 1) - 1;
    if (left > 0) this.#streamsOf.set(stream.client, left);
    else this.#streamsOf.delete(stream.client);
  }

  /** Drops every stream, rolling back their transactions. */
  close(): void {
    for (const stream of this.#streams.values()) {
      clearTimeout(stream.timer);
      void stream.tx?.abort('the server is closing');
    }
    this.#streams.clear();
    this.#streamsOf.clear();
  }
}

/**
 * Batons name the node that holds the stream (its peer address), signed with the cluster secret
 * so that a node relays only to addresses the cluster itself put in a baton.
 */
export function batonSigner(secret: string) {
  const sign = (text: string) =>
    createHmac('sha256', secret).update(text).digest('base64url').slice(0, 32);
  return {
    issue(holder: string): string {
      const text = `${randomBytes(18).toString('base64url')}.${Buffer.from(holder).toString('base64url')}`;
      return `${text}.${sign(text)}`;
    },
    holder(baton: string): string | null {
      const parts = baton.split('.');
      if (parts.length !== 3) return null;
      const text = `${parts[0]}.${parts[1]}`;
      const given = Buffer.from(parts[2] as string);
      const wanted = Buffer.from(sign(text));
      if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) return null;
      return Buffer.from(parts[1] as string, 'base64url').toString('utf8');
    },
  };
}
