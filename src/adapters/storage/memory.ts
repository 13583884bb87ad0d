import { StorageUnavailableError } from '../../errors.ts';
import { type FaultOptions, Faults } from '../faults.ts';
import {
  assertValidKey,
  assertValidRange,
  compareKeys,
  pageOfSortedKeys,
  toListPage,
} from './keys.ts';
import type { ByteRange, ListOptions, ListPage, StorageBackend } from './types.ts';

interface SharedState {
  faults: Faults;
  objects: Map<string, Uint8Array>;
}

/**
 * In-process object storage with fault injection; `forNode(id)` gives the view of one node so
 * faults can be aimed at it.
 */
export class MemoryStorage implements StorageBackend {
  readonly description = 'memory:';
  #state: SharedState;
  #node: string | undefined;

  constructor(options: FaultOptions = {}) {
    this.#state = { faults: new Faults(options), objects: new Map() };
  }

  get faults(): Faults {
    return this.#state.faults;
  }

  forNode(node: string): MemoryStorage {
    const view = new MemoryStorage();
    view.#state = this.#state;
    view.#node = node;
    return view;
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    assertValidKey(key);
    return this.#call(`put ${key}`, () => {
      this.#state.objects.set(key, new Uint8Array(body));
    });
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<boolean> {
    assertValidKey(key);
    return this.#call(`putIfAbsent ${key}`, () => {
      if (this.#state.objects.has(key)) return false;
      this.#state.objects.set(key, new Uint8Array(body));
      return true;
    });
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array | null> {
    assertValidKey(key);
    assertValidRange(range);
    return this.#call(`get ${key}`, () => {
      const body = this.#state.objects.get(key);
      if (!body) return null;
      return range ? body.slice(range.start, range.end ?? body.length) : body.slice();
    });
  }

  async list(prefix: string, options?: ListOptions): Promise<ListPage> {
    return this.#call(`list ${prefix}`, () => {
      const sorted = [...this.#state.objects]
        .map(([key, body]) => ({ key, size: body.length }))
        .sort((a, b) => compareKeys(a.key, b.key));
      return toListPage(pageOfSortedKeys(sorted, prefix, options));
    });
  }

  async delete(keys: readonly string[]): Promise<void> {
    for (const key of keys) assertValidKey(key);
    return this.#call(`delete ${keys.length} keys`, () => {
      for (const key of keys) this.#state.objects.delete(key);
    });
  }

  #call<T>(label: string, apply: () => T): Promise<T> {
    return this.#state.faults.call(this.#node, label, (m) => new StorageUnavailableError(m), apply);
  }
}

/** An in-process storage backend: share one between nodes in one process. */
export function createMemoryStorage(options: FaultOptions = {}): MemoryStorage {
  return new MemoryStorage(options);
}
