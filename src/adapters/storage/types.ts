/**
 * Object storage: the source of truth for changesets and snapshots.
 * Keys are `/`-separated, printable, without `..` segments; listing is in byte order of the key.
 */
export interface StorageBackend {
  put(key: string, body: Uint8Array): Promise<void>;
  /** Write-once: `false` when the key already exists. This is the fencing primitive. */
  putIfAbsent(key: string, body: Uint8Array): Promise<boolean>;
  /** `null` when the key does not exist. `range.end` is exclusive and clamped to the object's size. */
  get(key: string, range?: ByteRange): Promise<Uint8Array | null>;
  list(prefix: string, options?: ListOptions): Promise<ListPage>;
  /** Deletes the keys that exist; missing keys are not an error. */
  delete(keys: readonly string[]): Promise<void>;
  close?(): Promise<void>;
  /** Where the objects live, for messages (`file:///srv/hadb`, `s3://bucket/prefix`); no secrets. */
  readonly description?: string | undefined;
}

/** Bytes `start` to `end` (exclusive; absent: to the end) of an object. */
export interface ByteRange {
  start: number;
  end?: number;
}

/** Options of `StorageBackend.list`. */
export interface ListOptions {
  /** Only keys strictly greater than this one. */
  startAfter?: string;
  /** At most this many keys (default 1000). */
  limit?: number;
}

/** An object's key and size in a listing. */
export interface ListedObject {
  key: string;
  size: number;
}

/** One page of a listing. */
export interface ListPage {
  objects: ListedObject[];
  /** Pass as `startAfter` to get the next page; absent on the last page. */
  nextStartAfter?: string;
}

export const DEFAULT_LIST_LIMIT = 1000;
