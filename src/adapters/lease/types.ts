/**
 * A compare-and-swap register per key: the only primitive leader election needs.
 * There is no delete: a leader gives a lease up by CAS-writing a released record.
 *
 * Every method either settles with a definite answer or rejects with
 * `LeaseStoreUnavailableError`, in which case a write may or may not have landed.
 */
export interface LeaseStore {
  get(key: string): Promise<LeaseEntry | null>;
  /** Writes `value` only if `key` has never been written. */
  create(key: string, value: Uint8Array): Promise<CasResult>;
  /** Writes `value` only if the current revision of `key` is `revision`. */
  update(key: string, value: Uint8Array, revision: string): Promise<CasResult>;
  /** Calls `onChange` with each key under `prefix` that changed, until the returned function is called. */
  watch?(prefix: string, onChange: (key: string) => void): () => void;
  close?(): Promise<void>;
  /** Where the leases live, for messages (`file:///srv/hadb/leases.sqlite`); no secrets. */
  readonly description?: string | undefined;
}

/** A lease record's value and its revision. */
export interface LeaseEntry {
  value: Uint8Array;
  /** Opaque: a counter, an ETag, a stream sequence. Compared only for equality. */
  revision: string;
}

/** The outcome of a conditional lease write: the new revision, or a conflict. */
export type CasResult = { ok: true; revision: string } | { ok: false; reason: 'conflict' };

export const CONFLICT: CasResult = Object.freeze({ ok: false, reason: 'conflict' });
