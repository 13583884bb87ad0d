import { StorageNotFoundError } from '../errors.ts';
import { MemoryLeaseStore } from './lease/memory.ts';
import type { CasResult, LeaseEntry, LeaseStore } from './lease/types.ts';
import { type PacingOptions, RequestPacer } from './pacing.ts';
import { MemoryStorage } from './storage/memory.ts';
import type { ByteRange, ListOptions, ListPage, StorageBackend } from './storage/types.ts';

/** The labels of one series of a counter. */
export type Labels = Readonly<Record<string, string>>;

/**
 * What a meter needs of a `/metrics` counter: the node's registry (runtime/metrics.ts) makes them,
 * and an adapter must not import the runtime, so it names the shape it uses.
 */
export interface Counter {
  inc(labels?: Labels, by?: number): void;
  values(): Iterable<[Labels, number]>;
}

/**
 * Storage and lease-store wrappers that count every request by backend kind, operation and
 * outcome, and (optionally) pace it through a {@link RequestPacer}. With thousands of databases,
 * requests are what object storage bills and throttles, so they must be visible and bounded.
 * Counts never name a database.
 */

/** How a storage or lease-store request ended. */
export type RequestOutcome = 'ok' | 'conflict' | 'not-found' | 'error';

/** How many requests of one operation on one backend ended one way. */
export interface RequestCount {
  backend: string;
  op: string;
  outcome: RequestOutcome;
  count: number;
}

/** A node's storage and lease-store requests (`node.requestCounts()`). */
export interface RequestCounts {
  storage: RequestCount[];
  lease: RequestCount[];
}

/** Counts of one wrapper; others (a node's `/metrics` counter) can listen in. */
class Meter {
  readonly kind: string;
  readonly #counts = new Map<string, RequestCount>();
  readonly #sinks = new Set<Counter>();
  readonly #processCounts: Map<string, RequestCount>;

  constructor(kind: string, processCounts: Map<string, RequestCount>) {
    this.kind = kind;
    this.#processCounts = processCounts;
  }

  record(op: string, outcome: RequestOutcome): void {
    bump(this.#counts, this.kind, op, outcome);
    bump(this.#processCounts, this.kind, op, outcome);
    if (this.#sinks.size === 0) return;
    const labels: Labels = { backend: this.kind, op, outcome };
    for (const sink of this.#sinks) sink.inc(labels);
  }

  snapshot(): RequestCount[] {
    return [...this.#counts.values()].map((entry) => ({ ...entry }));
  }

  attach(counter: Counter): () => void {
    this.#sinks.add(counter);
    return () => this.#sinks.delete(counter);
  }
}

function bump(
  counts: Map<string, RequestCount>,
  backend: string,
  op: string,
  outcome: RequestOutcome,
): void {
  const key = `${backend}\0${op}\0${outcome}`;
  const entry = counts.get(key);
  if (entry) entry.count++;
  else counts.set(key, { backend, op, outcome, count: 1 });
}

const processStorageCounts = new Map<string, RequestCount>();
const processLeaseCounts = new Map<string, RequestCount>();

/** Every request every metered wrapper of this process made so far. */
export function requestCounts(): RequestCounts {
  return {
    storage: [...processStorageCounts.values()].map((entry) => ({ ...entry })),
    lease: [...processLeaseCounts.values()].map((entry) => ({ ...entry })),
  };
}

/** The sum of `counts` that match `filter` (all of them without one). */
export function totalRequests(
  counts: readonly RequestCount[],
  filter: Partial<Omit<RequestCount, 'count'>> = {},
): number {
  let total = 0;
  for (const entry of counts) {
    if (filter.backend !== undefined && entry.backend !== filter.backend) continue;
    if (filter.op !== undefined && entry.op !== filter.op) continue;
    if (filter.outcome !== undefined && entry.outcome !== filter.outcome) continue;
    total += entry.count;
  }
  return total;
}

export interface MeterOptions {
  /** The `backend` label: memory, fs, s3, nats… (default: guessed from the class, else `custom`). */
  kind?: string | undefined;
  /** Requests wait their turn here; none when absent. */
  pacer?: RequestPacer | undefined;
}

/** The kind of the backends whose class says it; the others are `custom` unless named. */
export function guessBackendKind(backend: StorageBackend | LeaseStore): string {
  if (backend instanceof MemoryStorage || backend instanceof MemoryLeaseStore) return 'memory';
  // By name: importing the class would load the NATS client into every process.
  if (backend.constructor?.name === 'NatsLeaseStore') return 'nats';
  return 'custom';
}

/** The `backend` label for a store opened from `url` (`file:` is `fs`), for `backendKinds`. */
export function backendKindOfUrl(url: string): string {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'file') return 'fs';
  return scheme === 'memory' || scheme === 's3' || scheme === 'nats' ? scheme : 'custom';
}

async function measured<T>(
  meter: Meter,
  pacer: RequestPacer | undefined,
  op: string,
  call: () => Promise<T>,
  outcomeOf: (value: T) => RequestOutcome,
  errorOutcome: (error: unknown) => RequestOutcome = () => 'error',
): Promise<T> {
  let value: T;
  try {
    value = pacer ? await pacer.run(call) : await call();
  } catch (error) {
    meter.record(op, errorOutcome(error));
    throw error;
  }
  meter.record(op, outcomeOf(value));
  return value;
}

const ok = (): RequestOutcome => 'ok';

export class MeteredStorage implements StorageBackend {
  readonly inner: StorageBackend;
  readonly kind: string;
  readonly pacer: RequestPacer | undefined;
  readonly #meter: Meter;

  constructor(inner: StorageBackend, options: MeterOptions = {}) {
    this.inner = inner;
    this.kind = options.kind ?? guessBackendKind(inner);
    this.pacer = options.pacer;
    this.#meter = new Meter(this.kind, processStorageCounts);
  }

  get description(): string | undefined {
    return this.inner.description;
  }

  /** This wrapper's requests so far. */
  requestCounts(): RequestCount[] {
    return this.#meter.snapshot();
  }

  /** Also counts every later request on `counter` (labels backend, op, outcome) until undone. */
  attach(counter: Counter): () => void {
    return this.#meter.attach(counter);
  }

  put(key: string, body: Uint8Array): Promise<void> {
    return this.#call('put', () => this.inner.put(key, body), ok);
  }

  putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    return this.#call(
      'putIfAbsent',
      () => this.inner.putIfAbsent(key, body),
      (written) => (written ? 'ok' : 'conflict'),
    );
  }

  get(key: string, range?: ByteRange): Promise<Uint8Array | null> {
    return this.#call(
      'get',
      () => this.inner.get(key, range),
      (body) => (body === null ? 'not-found' : 'ok'),
    );
  }

  list(prefix: string, options?: ListOptions): Promise<ListPage> {
    return this.#call('list', () => this.inner.list(prefix, options), ok);
  }

  delete(keys: readonly string[]): Promise<void> {
    return this.#call('delete', () => this.inner.delete(keys), ok);
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }

  #call<T>(op: string, call: () => Promise<T>, outcomeOf: (value: T) => RequestOutcome) {
    return measured(this.#meter, this.pacer, op, call, outcomeOf, (error) =>
      error instanceof StorageNotFoundError ? 'not-found' : 'error',
    );
  }
}

export class MeteredLeaseStore implements LeaseStore {
  readonly inner: LeaseStore;
  readonly kind: string;
  readonly pacer: RequestPacer | undefined;
  readonly #meter: Meter;
  readonly watch?: (prefix: string, onChange: (key: string) => void) => () => void;

  constructor(inner: LeaseStore, options: MeterOptions = {}) {
    this.inner = inner;
    this.kind = options.kind ?? guessBackendKind(inner);
    this.pacer = options.pacer;
    this.#meter = new Meter(this.kind, processLeaseCounts);
    // Present only when the inner store can watch: callers test for it. Not paced: it is one
    // long-lived subscription, not a request.
    const watch = inner.watch;
    if (watch) {
      this.watch = (prefix, onChange) => {
        const unwatch = watch.call(inner, prefix, onChange);
        this.#meter.record('watch', 'ok');
        return unwatch;
      };
    }
  }

  get description(): string | undefined {
    return this.inner.description;
  }

  requestCounts(): RequestCount[] {
    return this.#meter.snapshot();
  }

  attach(counter: Counter): () => void {
    return this.#meter.attach(counter);
  }

  get(key: string): Promise<LeaseEntry | null> {
    return measured(
      this.#meter,
      this.pacer,
      'get',
      () => this.inner.get(key),
      (entry) => (entry === null ? 'not-found' : 'ok'),
    );
  }

  create(key: string, value: Uint8Array): Promise<CasResult> {
    return measured(this.#meter, this.pacer, 'create', () => this.inner.create(key, value), cas);
  }

  update(key: string, value: Uint8Array, revision: string): Promise<CasResult> {
    return measured(
      this.#meter,
      this.pacer,
      'update',
      () => this.inner.update(key, value, revision),
      cas,
    );
  }

  async close(): Promise<void> {
    await this.inner.close?.();
  }
}

function cas(result: CasResult): RequestOutcome {
  return result.ok ? 'ok' : 'conflict';
}

/** `storage` counted (and paced), unless it already is. */
export function meterStorage(storage: StorageBackend, options: MeterOptions = {}): MeteredStorage {
  return storage instanceof MeteredStorage ? storage : new MeteredStorage(storage, options);
}

/** `leases` counted (and paced), unless it already is. */
export function meterLeaseStore(leases: LeaseStore, options: MeterOptions = {}): MeteredLeaseStore {
  return leases instanceof MeteredLeaseStore ? leases : new MeteredLeaseStore(leases, options);
}

export const DEFAULT_LEASE_PACING = { maxConcurrent: 64, ratePerSecond: Infinity } as const;

let processLeasePacer: RequestPacer | undefined;

/**
 * The lease-store pacer every node of this process shares unless told otherwise: a cap on
 * concurrency only, and apart from storage's, so a renewal never waits behind an upload.
 */
export function sharedLeasePacer(): RequestPacer {
  processLeasePacer ??= new RequestPacer(DEFAULT_LEASE_PACING);
  return processLeasePacer;
}

/** How a node paces one kind of request: a pacer to share, options for its own, or none. */
export type PacingChoice = RequestPacer | PacingOptions | false;

export function choosePacer(
  choice: PacingChoice | undefined,
  shared: () => RequestPacer,
): RequestPacer | undefined {
  if (choice === undefined) return shared();
  if (choice === false) return undefined;
  return choice instanceof RequestPacer ? choice : new RequestPacer(choice);
}

/** A `/metrics` counter's samples as request counts. */
export function countsOf(counter: Counter): RequestCount[] {
  return [...counter.values()].map(([labels, count]) => ({
    backend: labels.backend ?? '',
    op: labels.op ?? '',
    outcome: (labels.outcome ?? 'ok') as RequestOutcome,
    count,
  }));
}
