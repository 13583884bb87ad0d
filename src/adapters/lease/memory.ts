import { LeaseStoreUnavailableError } from '../../errors.ts';
import { type FaultOptions, Faults } from '../faults.ts';
import { type CasResult, CONFLICT, type LeaseEntry, type LeaseStore } from './types.ts';

/** A lease write as it took effect in a `MemoryLeaseStore`. */
export interface LeaseWrite {
  key: string;
  value: Uint8Array;
  revision: string;
  node: string | undefined;
}

/** Options of `createMemoryLeaseStore`. */
export interface MemoryLeaseStoreOptions extends FaultOptions {
  /** Called synchronously at the instant each write takes effect (model tests keep a history). */
  onWrite?: (write: LeaseWrite) => void;
}

interface SharedState {
  faults: Faults;
  entries: Map<string, { value: Uint8Array; revision: number }>;
  watchers: Set<{ prefix: string; node: string | undefined; onChange: (key: string) => void }>;
  onWrite: ((write: LeaseWrite) => void) | undefined;
}

/**
 * An in-process lease store with fault injection. `forNode(id)` returns the view a node has of
 * it, so faults can be aimed at one node; watchers of a cut-off node hear nothing.
 */
export class MemoryLeaseStore implements LeaseStore {
  readonly description = 'memory:';
  #state: SharedState;
  #node: string | undefined;

  constructor(options: MemoryLeaseStoreOptions = {}) {
    this.#state = {
      faults: new Faults(options),
      entries: new Map(),
      watchers: new Set(),
      onWrite: options.onWrite,
    };
  }

  get faults(): Faults {
    return this.#state.faults;
  }

  /** The store as `node` sees it: faults aimed at `node` apply to this view. */
  forNode(node: string): MemoryLeaseStore {
    const view = new MemoryLeaseStore();
    view.#state = this.#state;
    view.#node = node;
    return view;
  }

  get(key: string): Promise<LeaseEntry | null> {
    return this.#call(`get ${key}`, () => {
      const entry = this.#state.entries.get(key);
      return entry ? { value: entry.value.slice(), revision: String(entry.revision) } : null;
    });
  }

  create(key: string, value: Uint8Array): Promise<CasResult> {
    return this.#call(`create ${key}`, () => {
      if (this.#state.entries.has(key)) return CONFLICT;
      return this.#write(key, value, 1);
    });
  }

  update(key: string, value: Uint8Array, revision: string): Promise<CasResult> {
    return this.#call(`update ${key}`, () => {
      const entry = this.#state.entries.get(key);
      if (!entry || String(entry.revision) !== revision) return CONFLICT;
      return this.#write(key, value, entry.revision + 1);
    });
  }

  watch(prefix: string, onChange: (key: string) => void): () => void {
    const watcher = { prefix, node: this.#node, onChange };
    this.#state.watchers.add(watcher);
    return () => this.#state.watchers.delete(watcher);
  }

  /** The current revision of every key, read without faults (for test assertions). */
  peek(key: string): LeaseEntry | null {
    const entry = this.#state.entries.get(key);
    return entry ? { value: entry.value.slice(), revision: String(entry.revision) } : null;
  }

  #write(key: string, value: Uint8Array, revision: number): CasResult {
    this.#state.entries.set(key, { value: new Uint8Array(value), revision });
    this.#state.onWrite?.({
      key,
      value: new Uint8Array(value),
      revision: String(revision),
      node: this.#node,
    });
    for (const watcher of this.#state.watchers) {
      if (!key.startsWith(watcher.prefix)) continue;
      queueMicrotask(() => {
        if (!this.#state.faults.isCutOff(watcher.node)) watcher.onChange(key);
      });
    }
    return { ok: true, revision: String(revision) };
  }

  #call<T>(label: string, apply: () => T): Promise<T> {
    return this.#state.faults.call(
      this.#node,
      label,
      (m) => new LeaseStoreUnavailableError(m),
      apply,
    );
  }
}

/** An in-process lease store: share one between nodes in one process to make a cluster. */
export function createMemoryLeaseStore(options: MemoryLeaseStoreOptions = {}): MemoryLeaseStore {
  return new MemoryLeaseStore(options);
}
