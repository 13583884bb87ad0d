import { randomUUID } from 'node:crypto';
import {
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  StorageType,
} from '@nats-io/jetstream';
import { type KV, Kvm, type KvWatchEntry } from '@nats-io/kv';
import {
  connect,
  type NatsConnection,
  type QueuedIterator,
  type Status,
} from '@nats-io/transport-node';
import { HadbError, LeaseStoreUnavailableError, LeaseStoreUnsafeError } from '../../errors.ts';
import { type CasResult, CONFLICT, type LeaseEntry, type LeaseStore } from './types.ts';

const DEFAULT_TIMEOUT_MS = 2000;
const DEFAULT_RECONNECT_WAIT_MS = 500;
const DEFAULT_PING_INTERVAL_MS = 5000;
/** Stream sequences as `String(n)` hands them out; anything else was never ours. */
const REVISION = /^[1-9][0-9]{0,14}$/;
/**
 * Raw KV keys of the self-test: with a `.`, which {@link encodeNatsKey} never emits, so no hadb
 * key can collide with them and other stores' watchers ignore their writes.
 */
const SELF_TEST_PREFIX = 'hadb-self-test';

export interface NatsLeaseStoreCommonOptions {
  /** The KV bucket, created (history 1, file storage) when missing. */
  bucket: string;
  /** A call that has not settled by then fails with `LeaseStoreUnavailableError` (default 2000). */
  timeoutMs?: number;
  /** Replicas of the bucket when this store creates it (default 1). */
  replicas?: number;
  /** Wait between reconnect attempts, and before restarting a failed watcher (default 500). */
  reconnectWaitMs?: number;
  /** Ping period of an owned connection; two unanswered pings drop it (default 5000). */
  pingIntervalMs?: number;
  /**
   * Check at open that the server really does compare-and-swap (see {@link selfTestNatsLeases})
   * and refuse the store with `LeaseStoreUnsafeError` when it does not (default true).
   */
  selfTest?: boolean;
  onEvent?: (event: NatsLeaseStoreEvent) => void;
}

/**
 * Either `servers` (the store connects, reconnects forever and closes the connection on
 * `close()`) or an open `connection` that stays the caller's, reconnect policy included.
 */
export type NatsLeaseStoreOptions = NatsLeaseStoreCommonOptions &
  ({ servers: string | string[] } | { connection: NatsConnection });

export type NatsLeaseStoreEvent =
  | { type: 'disconnected' }
  | { type: 'reconnected' }
  | { type: 'watcher-started'; fromRevision: number }
  | { type: 'watcher-failed'; error: LeaseStoreUnavailableError }
  | { type: 'listener-failed'; key: string; error: unknown };

type Emit = (event: NatsLeaseStoreEvent) => void;

/**
 * A lease store on a NATS JetStream KV bucket: a revision is the stream sequence of the key's
 * last write, `create` and `update` are publishes with an expected last subject sequence, and
 * the server answers a failed expectation with JetStream error 10071 (`CONFLICT`).
 *
 * Expiry lives in the lease record: nats-server 2.9 ignores per-key TTL, and no bucket TTL is
 * set. The bucket is created only at open; if it disappears later (a server that lost its
 * store), every call fails rather than silently restarting epochs from scratch.
 *
 * Keys are escaped with {@link encodeNatsKey}. `watch` shares one wildcard watcher per store.
 */
export class NatsLeaseStore implements LeaseStore {
  readonly bucket: string;
  readonly #nc: NatsConnection;
  readonly #kv: KV;
  readonly #jsm: JetStreamManager;
  readonly #owned: boolean;
  readonly #timeoutMs: number;
  readonly #emit: Emit;
  readonly #statuses: AsyncIterable<Status>;
  readonly #watcher: SharedWatcher;
  #connected = true;
  #closed = false;

  private constructor(options: {
    bucket: string;
    nc: NatsConnection;
    kv: KV;
    jsm: JetStreamManager;
    owned: boolean;
    timeoutMs: number;
    retryMs: number;
    emit: Emit;
  }) {
    this.bucket = options.bucket;
    this.#nc = options.nc;
    this.#kv = options.kv;
    this.#jsm = options.jsm;
    this.#owned = options.owned;
    this.#timeoutMs = options.timeoutMs;
    this.#emit = options.emit;
    this.#watcher = new SharedWatcher(options.kv, options.retryMs, options.emit);
    this.#statuses = options.nc.status();
    void this.#followStatus();
  }

  get description(): string {
    return `nats KV bucket ${this.bucket}`;
  }

  static async open(options: NatsLeaseStoreOptions): Promise<NatsLeaseStore> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const retryMs = options.reconnectWaitMs ?? DEFAULT_RECONNECT_WAIT_MS;
    const owned = !('connection' in options);
    let nc: NatsConnection;
    if ('connection' in options) {
      nc = options.connection;
    } else {
      try {
        nc = await connect({
          servers: options.servers,
          timeout: timeoutMs,
          maxReconnectAttempts: -1,
          reconnectTimeWait: retryMs,
          pingInterval: options.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS,
          maxPingOut: 2,
        });
      } catch (error) {
        throw unavailable(`connecting to NATS at ${String(options.servers)}`, error);
      }
    }
    let store: NatsLeaseStore;
    try {
      const js = jetstream(nc, { timeout: timeoutMs });
      const kv = await new Kvm(js).create(options.bucket, {
        history: 1,
        storage: StorageType.File,
        replicas: options.replicas ?? 1,
      });
      store = new NatsLeaseStore({
        bucket: options.bucket,
        nc,
        kv,
        // No account-info round trip: the self-test's clean-up is its only use.
        jsm: await js.jetstreamManager(false),
        owned,
        timeoutMs,
        retryMs,
        emit: guarded(options.onEvent),
      });
    } catch (error) {
      if (owned) await nc.close().catch(() => undefined);
      throw unavailable(`opening KV bucket ${options.bucket}`, error);
    }
    if (options.selfTest ?? true) {
      try {
        await store.selfTest();
      } catch (error) {
        await store.close();
        throw error;
      }
    }
    return store;
  }

  /**
   * Checks that the bucket really does compare-and-swap (some nats-server versions had KV CAS
   * bugs), on scratch keys unique to this run: create, a second create rejected, update at the
   * current revision (a new revision), update at the stale revision rejected, update of a missing
   * key rejected, a read of the updated value. Throws {@link LeaseStoreUnsafeError} naming the
   * failing step, or {@link LeaseStoreUnavailableError} when NATS does not answer. Then purges
   * the scratch keys from the stream (best effort).
   */
  async selfTest(): Promise<void> {
    const scratch = `${SELF_TEST_PREFIX}.${randomUUID()}`;
    const key = `${scratch}.key`;
    const absent = `${scratch}.absent`;
    const value = (text: string) => new TextEncoder().encode(`self-test ${text}`);
    const unsafe = (step: string, what: string) =>
      new LeaseStoreUnsafeError(
        step,
        `${what} (KV bucket ${this.bucket}); leases there would not be safe`,
      );
    const expectConflict = async (step: string, write: Promise<CasResult>) => {
      if ((await write).ok) throw unsafe(step, 'a conditional write that must fail was accepted');
    };
    try {
      const created = await this.#create(key, value('created'));
      if (!created.ok) throw unsafe('create', 'creating a new key conflicted');
      await expectConflict('second create', this.#create(key, value('second')));
      const updated = await this.#update(key, value('updated'), created.revision);
      if (!updated.ok) throw unsafe('update', 'an update at the current revision conflicted');
      if (Number(updated.revision) <= Number(created.revision)) {
        throw unsafe('update', 'an update did not move the revision forward');
      }
      await expectConflict('stale update', this.#update(key, value('stale'), created.revision));
      await expectConflict(
        'update of a missing key',
        this.#update(absent, value('absent'), updated.revision),
      );
      const entry = await this.#get(key);
      if (
        entry === null ||
        entry.revision !== updated.revision ||
        !sameBytes(entry.value, value('updated'))
      ) {
        throw unsafe(
          'read after update',
          'a read did not return the updated value at its revision',
        );
      }
    } finally {
      // A stream purge leaves no marker behind, unlike a KV purge or delete.
      await withDeadline(
        this.#jsm.streams.purge(`KV_${this.bucket}`, { filter: `$KV.${this.bucket}.${scratch}.>` }),
        this.#timeoutMs,
        'purging the self-test keys',
      ).catch(() => undefined);
    }
  }

  get(key: string): Promise<LeaseEntry | null> {
    return this.#get(encodeNatsKey(key), key);
  }

  create(key: string, value: Uint8Array): Promise<CasResult> {
    return this.#create(encodeNatsKey(key), value, key);
  }

  update(key: string, value: Uint8Array, revision: string): Promise<CasResult> {
    return this.#update(encodeNatsKey(key), value, revision, key);
  }

  /** `get` of the raw KV key `kvKey`; `key` names it in errors. */
  #get(kvKey: string, key = kvKey): Promise<LeaseEntry | null> {
    return this.#call(`get ${JSON.stringify(key)}`, async (kv) => {
      const entry = await kv.get(kvKey);
      // A deleted or purged key leaves a marker entry; hadb never deletes, but others might.
      if (entry === null || entry.operation !== 'PUT') return null;
      return { value: new Uint8Array(entry.value), revision: String(entry.revision) };
    });
  }

  #create(kvKey: string, value: Uint8Array, key = kvKey): Promise<CasResult> {
    // A copy (Buffer#slice would not be one): the client sends the bytes on a later tick.
    const copy = new Uint8Array(value);
    return this.#call(`create ${JSON.stringify(key)}`, async (kv) => {
      try {
        return { ok: true, revision: String(await kv.create(kvKey, copy)) };
      } catch (error) {
        if (isConflict(error)) return CONFLICT;
        throw error;
      }
    });
  }

  #update(kvKey: string, value: Uint8Array, revision: string, key = kvKey): Promise<CasResult> {
    const copy = new Uint8Array(value);
    return this.#call(`update ${JSON.stringify(key)}`, async (kv) => {
      // kv.update throws on revision <= 0, and NaN would turn into an unconditional put.
      if (!REVISION.test(revision)) return CONFLICT;
      try {
        const next = await kv.update(kvKey, copy, Number(revision));
        return { ok: true, revision: String(next) };
      } catch (error) {
        if (isConflict(error)) return CONFLICT;
        throw error;
      }
    });
  }

  /**
   * Calls `onChange(key)` for each write to a key starting with `prefix` after the shared
   * watcher went live (see {@link watching}); a key may be reported more than once, and writes
   * made while it was down are reported once it resumes. Matching happens here, on decoded
   * keys: all subscribers share the one watcher over the whole bucket.
   */
  watch(prefix: string, onChange: (key: string) => void): () => void {
    if (this.#closed) return () => {};
    return this.#watcher.subscribe(prefix, onChange);
  }

  /**
   * Resolves once the shared watcher is live (never, while NATS stays unreachable), or at once
   * when nobody watches.
   */
  watching(): Promise<void> {
    return this.#watcher.ready();
  }

  /** KV watchers (server-side consumers) this store runs now: 0 or 1, however many subscribers. */
  get watcherCount(): number {
    return this.#watcher.live ? 1 : 0;
  }

  get subscriberCount(): number {
    return this.#watcher.size;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher.close();
    // nats-core's status() is a QueuedIterator: stop() ends the loop without another event.
    (this.#statuses as Partial<QueuedIterator<Status>>).stop?.();
    if (!this.#owned) return;
    try {
      if (this.#connected) {
        await withDeadline(this.#nc.drain(), this.#timeoutMs, 'draining the NATS connection');
      }
    } catch {
      // A drain that cannot finish (server gone) is no reason to keep the socket open.
    } finally {
      await this.#nc.close().catch(() => undefined);
    }
  }

  async #followStatus(): Promise<void> {
    for await (const status of this.#statuses) {
      if (status.type === 'disconnect') {
        this.#connected = false;
        this.#emit({ type: 'disconnected' });
      } else if (status.type === 'reconnect') {
        this.#connected = true;
        this.#emit({ type: 'reconnected' });
        // The server may have restarted and lost the watcher's ephemeral consumer.
        this.#watcher.restart();
      } else if (status.type === 'close') {
        // A closed connection never comes back: stop the watcher rather than retry forever.
        this.#connected = false;
        this.#watcher.close();
      }
    }
  }

  async #call<T>(what: string, operation: (kv: KV) => Promise<T>): Promise<T> {
    if (this.#closed) throw new LeaseStoreUnavailableError(`${what}: the lease store is closed`);
    // Fail now rather than queue the request for a reconnect that may come too late.
    if (!this.#connected || this.#nc.isClosed()) {
      throw new LeaseStoreUnavailableError(`${what}: not connected to NATS`);
    }
    try {
      return await withDeadline(operation(this.#kv), this.#timeoutMs, what);
    } catch (error) {
      if (error instanceof HadbError) throw error;
      throw unavailable(`${what} in KV bucket ${this.bucket}`, error);
    }
  }
}

/** Opens the store; unless `selfTest: false`, only after {@link selfTestNatsLeases} passed. */
export function openNatsLeaseStore(options: NatsLeaseStoreOptions): Promise<NatsLeaseStore> {
  return NatsLeaseStore.open(options);
}

/**
 * Runs the compare-and-swap self-test of {@link NatsLeaseStore.selfTest} on an open store:
 * throws {@link LeaseStoreUnsafeError} naming the failing step. The store stays open either way.
 */
export function selfTestNatsLeases(store: NatsLeaseStore): Promise<void> {
  return store.selfTest();
}

/**
 * One KV watcher over the whole bucket, started with the first subscriber and stopped with the
 * last, so a process watching thousands of databases holds one server-side consumer.
 *
 * It resumes from the last stream sequence it saw (`cursor`), so a restart after a reconnect or
 * a failure reports the writes made in between rather than losing them.
 */
class SharedWatcher {
  readonly #kv: KV;
  readonly #retryMs: number;
  readonly #emit: Emit;
  /** Subscribers by exact prefix: a key finds its subscribers with one lookup per prefix length. */
  readonly #byPrefix = new Map<string, Set<{ onChange: (key: string) => void }>>();
  #size = 0;
  #iterator: QueuedIterator<KvWatchEntry> | undefined;
  #starting = false;
  /** Bumped on reconnect: a watcher opened before it may sit on a consumer the server lost. */
  #generation = 0;
  #cursor: number | undefined;
  #retry: NodeJS.Timeout | undefined;
  #waiters: (() => void)[] = [];
  #closed = false;

  constructor(kv: KV, retryMs: number, emit: Emit) {
    this.#kv = kv;
    this.#retryMs = retryMs;
    this.#emit = emit;
  }

  get live(): boolean {
    return this.#iterator !== undefined;
  }

  get size(): number {
    return this.#size;
  }

  subscribe(prefix: string, onChange: (key: string) => void): () => void {
    const subscriber = { onChange };
    let set = this.#byPrefix.get(prefix);
    if (set === undefined) {
      set = new Set();
      this.#byPrefix.set(prefix, set);
    }
    set.add(subscriber);
    this.#size++;
    this.#start();
    let subscribed = true;
    return () => {
      if (!subscribed) return;
      subscribed = false;
      const current = this.#byPrefix.get(prefix);
      current?.delete(subscriber);
      if (current?.size === 0) this.#byPrefix.delete(prefix);
      this.#size--;
      if (this.#size === 0) this.#stop();
    };
  }

  ready(): Promise<void> {
    if (this.#closed || this.#size === 0 || this.#iterator !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  restart(): void {
    this.#generation++;
    const stale = this.#iterator;
    this.#iterator = undefined;
    stale?.stop();
    this.#start();
  }

  close(): void {
    this.#closed = true;
    this.#stop();
  }

  #start(): void {
    if (this.#closed || this.#size === 0 || this.#iterator !== undefined || this.#starting) return;
    clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#starting = true;
    void this.#open(this.#generation);
  }

  async #open(generation: number): Promise<void> {
    let iterator: QueuedIterator<KvWatchEntry>;
    let fromRevision: number;
    try {
      // Start after the newest write: earlier ones are history, not changes.
      this.#cursor ??= (await this.#kv.status()).streamInfo.state.last_seq;
      fromRevision = this.#cursor + 1;
      iterator = await this.#kv.watch({
        key: '>',
        headers_only: true,
        resumeFromRevision: fromRevision,
      });
    } catch (error) {
      this.#starting = false;
      if (this.#closed || this.#size === 0) return;
      this.#emit({
        type: 'watcher-failed',
        error: unavailable('starting the shared KV watcher', error),
      });
      // A reconnect while this attempt hung deserves a fresh attempt now, not after a wait.
      if (generation !== this.#generation) this.#start();
      else this.#scheduleRetry();
      return;
    }
    this.#starting = false;
    if (this.#closed || this.#size === 0 || generation !== this.#generation) {
      iterator.stop();
      this.#start();
      return;
    }
    this.#iterator = iterator;
    this.#emit({ type: 'watcher-started', fromRevision });
    for (const resolve of this.#waiters.splice(0)) resolve();
    await this.#consume(iterator);
  }

  async #consume(iterator: QueuedIterator<KvWatchEntry>): Promise<void> {
    try {
      for await (const entry of iterator) {
        // Entries still buffered in a replaced watcher: its successor reports them again.
        if (this.#iterator !== iterator) break;
        this.#cursor = Math.max(this.#cursor ?? 0, entry.revision);
        const key = decodeNatsKey(entry.key);
        if (key !== undefined) this.#dispatch(key);
      }
    } catch (error) {
      this.#emit({ type: 'watcher-failed', error: unavailable('the shared KV watcher', error) });
    }
    // Stopped on purpose (unsubscribe, close, reconnect) when it is no longer the current one.
    if (this.#iterator !== iterator) return;
    this.#iterator = undefined;
    this.#scheduleRetry();
  }

  #dispatch(key: string): void {
    for (let length = 0; length <= key.length; length++) {
      const subscribers = this.#byPrefix.get(key.slice(0, length));
      if (subscribers === undefined) continue;
      for (const { onChange } of subscribers) {
        try {
          onChange(key);
        } catch (error) {
          this.#emit({ type: 'listener-failed', key, error });
        }
      }
    }
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#size === 0 || this.#retry !== undefined) return;
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#start();
    }, this.#retryMs);
    this.#retry.unref();
  }

  #stop(): void {
    clearTimeout(this.#retry);
    this.#retry = undefined;
    const iterator = this.#iterator;
    this.#iterator = undefined;
    iterator?.stop();
    // The next watcher starts from the newest write, not from the writes nobody watched.
    this.#cursor = undefined;
    for (const resolve of this.#waiters.splice(0)) resolve();
  }
}

/** Characters a KV key may hold that need no escaping; `.` (the token separator) is escaped. */
const PLAIN = /[-/=A-Za-z0-9]/;
const ENCODED = /^(?:[-/=A-Za-z0-9]|_[0-9A-F]{4})+$/;

/**
 * Maps any hadb key one-to-one onto a valid KV key: `-`, `/`, `=`, letters and digits stay,
 * every other UTF-16 code unit becomes `_` and four uppercase hex digits (`.` → `_002E`,
 * `_` → `_005F`), and the empty key becomes a lone `_`, which no other key produces.
 */
export function encodeNatsKey(key: string): string {
  if (key === '') return '_';
  let encoded = '';
  for (const char of key) {
    if (PLAIN.test(char)) {
      encoded += char;
      continue;
    }
    for (let i = 0; i < char.length; i++) {
      encoded += `_${char.charCodeAt(i).toString(16).toUpperCase().padStart(4, '0')}`;
    }
  }
  return encoded;
}

/** The hadb key `encoded` stands for, or `undefined` for a key that encodeNatsKey never makes. */
export function decodeNatsKey(encoded: string): string | undefined {
  if (encoded === '_') return '';
  if (!ENCODED.test(encoded)) return undefined;
  const key = encoded.replace(/_([0-9A-F]{4})/g, (_, hex: string) =>
    String.fromCharCode(Number.parseInt(hex, 16)),
  );
  // `_0061` would decode to `a`, which encodes as `a`: only the canonical form is ours.
  return encodeNatsKey(key) === encoded ? key : undefined;
}

/** JetStream's answer to a failed expected-last-subject-sequence header: the write did not land. */
function isConflict(error: unknown): boolean {
  return (
    error instanceof JetStreamApiError &&
    (error.code === JetStreamApiCodes.StreamWrongLastSequence ||
      error.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function unavailable(what: string, error: unknown): LeaseStoreUnavailableError {
  const reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return new LeaseStoreUnavailableError(`${what}: ${reason}`, { cause: error });
}

/** An observer that throws must not stop the store from following its connection. */
function guarded(onEvent: Emit | undefined): Emit {
  return (event) => {
    try {
      onEvent?.(event);
    } catch {
      // The observer's own bug; the store carries on.
    }
  };
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new LeaseStoreUnavailableError(`${what}: no answer within ${ms} ms`)),
      ms,
    );
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
