import { InvalidArgumentError, InvalidKeyError } from '../../errors.ts';
import { type ByteRange, DEFAULT_LIST_LIMIT, type ListOptions, type ListPage } from './types.ts';

const MAX_KEY_BYTES = 1024;

/** For listings: a name in storage that is not a valid key is not an object of ours. */
export function isValidKey(key: string): boolean {
  try {
    assertValidKey(key);
    return true;
  } catch {
    return false;
  }
}

/** Keys must be safe as S3 keys and as relative file paths alike. */
export function assertValidKey(key: string): void {
  if (key.length === 0) throw new InvalidKeyError(key, 'empty');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES)
    throw new InvalidKeyError(key, 'longer than 1024 bytes');
  if (key.startsWith('/') || key.endsWith('/'))
    throw new InvalidKeyError(key, 'starts or ends with /');
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new InvalidKeyError(key, 'empty, "." or ".." path segment');
    }
    if (segment.startsWith('.tmp-'))
      throw new InvalidKeyError(key, '".tmp-" segments are reserved');
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  if (/[\u0000-\u001f\u007f\\]/.test(key))
    throw new InvalidKeyError(key, 'control character or backslash');
}

/** Byte-order comparison, the order S3 lists keys in (not locale order). */
export function compareKeys(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** One page of a listing over keys already sorted with {@link compareKeys}. */
export function pageOfSortedKeys<T extends { key: string }>(
  sorted: readonly T[],
  prefix: string,
  options: ListOptions = {},
): { items: T[]; nextStartAfter?: string } {
  const limit = options.limit ?? DEFAULT_LIST_LIMIT;
  if (!Number.isInteger(limit) || limit < 1)
    throw new InvalidArgumentError(`list limit must be a positive integer, got ${limit}`);
  const items: T[] = [];
  for (const item of sorted) {
    if (!item.key.startsWith(prefix)) continue;
    if (options.startAfter !== undefined && compareKeys(item.key, options.startAfter) <= 0)
      continue;
    if (items.length === limit) {
      const last = items[items.length - 1];
      return last ? { items, nextStartAfter: last.key } : { items };
    }
    items.push(item);
  }
  return { items };
}

export function toListPage(page: {
  items: { key: string; size: number }[];
  nextStartAfter?: string;
}): ListPage {
  const objects = page.items.map(({ key, size }) => ({ key, size }));
  return page.nextStartAfter === undefined
    ? { objects }
    : { objects, nextStartAfter: page.nextStartAfter };
}

/** A byte range every backend accepts: `start` >= 0, `end` (exclusive) >= `start`. */
export function assertValidRange(range: ByteRange | undefined): void {
  if (range === undefined) return;
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || start < 0) {
    throw new InvalidArgumentError(`range start must be a non-negative integer, got ${start}`);
  }
  if (end !== undefined && (!Number.isSafeInteger(end) || end < start)) {
    throw new InvalidArgumentError(`range end must be an integer >= start (${start}), got ${end}`);
  }
}
