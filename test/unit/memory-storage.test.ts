import { describe, expect, it } from 'vitest';
import { compareKeys } from '../../src/adapters/storage/keys.ts';
import { MemoryStorage } from '../../src/adapters/storage/memory.ts';
import {
  InvalidArgumentError,
  InvalidKeyError,
  StorageUnavailableError,
} from '../../src/errors.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (body: Uint8Array | null) => (body === null ? null : new TextDecoder().decode(body));

async function listAll(storage: MemoryStorage, prefix: string, limit?: number): Promise<string[]> {
  const keys: string[] = [];
  let startAfter: string | undefined;
  for (let pages = 0; pages < 1000; pages++) {
    const page = await storage.list(prefix, {
      ...(startAfter === undefined ? {} : { startAfter }),
      ...(limit === undefined ? {} : { limit }),
    });
    if (limit !== undefined) expect(page.objects.length).toBeLessThanOrEqual(limit);
    keys.push(...page.objects.map((object) => object.key));
    if (page.nextStartAfter === undefined) return keys;
    startAfter = page.nextStartAfter;
  }
  throw new Error('listing did not end');
}

describe('memory storage', () => {
  it('round trips bytes, including empty bodies', async () => {
    const storage = new MemoryStorage();
    const body = new Uint8Array([0, 1, 2, 255, 0]);
    await storage.put('db/changesets/0001', body);
    await storage.put('db/empty', new Uint8Array());
    expect(await storage.get('db/changesets/0001')).toEqual(body);
    expect(await storage.get('db/empty')).toEqual(new Uint8Array());
  });

  it('returns null for a missing key', async () => {
    const storage = new MemoryStorage();
    expect(await storage.get('missing')).toBeNull();
    expect(await storage.get('missing', { start: 0, end: 1 })).toBeNull();
  });

  it('put overwrites', async () => {
    const storage = new MemoryStorage();
    await storage.put('k', bytes('first'));
    await storage.put('k', bytes('second'));
    expect(text(await storage.get('k'))).toBe('second');
  });

  it('copies bodies in and out', async () => {
    const storage = new MemoryStorage();
    const body = bytes('abc');
    await storage.put('k', body);
    body[0] = 0x7a;
    const read = await storage.get('k');
    expect(text(read)).toBe('abc');
    if (read) read[1] = 0x7a;
    expect(text(await storage.get('k'))).toBe('abc');
    const ranged = await storage.get('k', { start: 0, end: 2 });
    if (ranged) ranged[0] = 0x7a;
    expect(text(await storage.get('k'))).toBe('abc');
  });

  it('putIfAbsent writes once and never changes the content afterwards', async () => {
    const storage = new MemoryStorage();
    expect(await storage.putIfAbsent('fence/1', bytes('winner'))).toBe(true);
    expect(await storage.putIfAbsent('fence/1', bytes('loser'))).toBe(false);
    expect(text(await storage.get('fence/1'))).toBe('winner');
    await storage.delete(['fence/1']);
    expect(await storage.putIfAbsent('fence/1', bytes('after delete'))).toBe(true);
    expect(text(await storage.get('fence/1'))).toBe('after delete');
  });

  it('only one of many concurrent putIfAbsent calls wins', async () => {
    const storage = new MemoryStorage();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        storage.forNode(`n${i}`).putIfAbsent('f', bytes(`${i}`)),
      ),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(text(await storage.get('f'))).toBe(String(results.indexOf(true)));
  });

  it('reads byte ranges, end exclusive and clamped', async () => {
    const storage = new MemoryStorage();
    await storage.put('r', bytes('0123456789'));
    expect(text(await storage.get('r', { start: 2, end: 5 }))).toBe('234');
    expect(text(await storage.get('r', { start: 7 }))).toBe('789');
    expect(text(await storage.get('r', { start: 8, end: 100 }))).toBe('89');
    expect(text(await storage.get('r', { start: 4, end: 4 }))).toBe('');
    expect(text(await storage.get('r', { start: 20 }))).toBe('');
    expect(text(await storage.get('r', { start: 0 }))).toBe('0123456789');
  });

  it('rejects invalid ranges', async () => {
    const storage = new MemoryStorage();
    await storage.put('r', bytes('0123456789'));
    const invalid = [
      { start: -1 },
      { start: 5, end: 4 },
      { start: 1.5 },
      { start: 0, end: 2.5 },
      { start: Number.NaN },
      { start: 0, end: Number.POSITIVE_INFINITY },
      { start: 2 ** 53 },
    ];
    for (const range of invalid) {
      await expect(async () => storage.get('r', range), JSON.stringify(range)).rejects.toThrow(
        InvalidArgumentError,
      );
    }
  });

  it('lists in byte order, not locale order', async () => {
    const storage = new MemoryStorage();
    const keys = ['p/b', 'p/B', 'p/a', 'p/é', 'p/z', 'p/_', 'p/a/b', 'p/a-b', 'p/10', 'p/9'];
    for (const key of keys) await storage.put(key, bytes(key));
    const listed = await listAll(storage, 'p/');
    expect(listed).toEqual([...keys].sort(compareKeys));
    expect(listed).toEqual([
      'p/10',
      'p/9',
      'p/B',
      'p/_',
      'p/a',
      'p/a-b',
      'p/a/b',
      'p/b',
      'p/z',
      'p/é',
    ]);
  });

  it('lists only keys under the prefix, with their sizes', async () => {
    const storage = new MemoryStorage();
    await storage.put('db1/a', bytes('xx'));
    await storage.put('db1/b', bytes(''));
    await storage.put('db10/a', bytes('yyy'));
    await storage.put('db2/a', bytes('z'));
    expect(await storage.list('db1/')).toEqual({
      objects: [
        { key: 'db1/a', size: 2 },
        { key: 'db1/b', size: 0 },
      ],
    });
    expect((await storage.list('db1')).objects.map((o) => o.key)).toEqual([
      'db1/a',
      'db1/b',
      'db10/a',
    ]);
    expect(await storage.list('nothing/')).toEqual({ objects: [] });
  });

  it('paginates with limit and startAfter', async () => {
    const storage = new MemoryStorage();
    const keys = Array.from({ length: 25 }, (_, i) => `log/${String(i).padStart(4, '0')}`);
    for (const key of [...keys].reverse()) await storage.put(key, bytes('x'));
    const first = await storage.list('log/', { limit: 10 });
    expect(first.objects.map((o) => o.key)).toEqual(keys.slice(0, 10));
    expect(first.nextStartAfter).toBe(keys[9]);
    const last = await storage.list('log/', { limit: 5, startAfter: 'log/0019' });
    expect(last.objects.map((o) => o.key)).toEqual(keys.slice(20));
    expect(last.nextStartAfter).toBeUndefined();
    for (const limit of [1, 3, 10, 24, 25, 26, 1000]) {
      expect(await listAll(storage, 'log/', limit), `limit ${limit}`).toEqual(keys);
    }
    const after = await storage.list('log/', { startAfter: 'log/0012x' });
    expect(after.objects.map((o) => o.key)).toEqual(keys.slice(13));
  });

  it('defaults to pages of 1000 keys', async () => {
    const storage = new MemoryStorage();
    for (let i = 0; i < 1001; i++) await storage.put(`k/${String(i).padStart(5, '0')}`, bytes(''));
    const page = await storage.list('k/');
    expect(page.objects).toHaveLength(1000);
    expect(page.nextStartAfter).toBe('k/00999');
    const rest = await storage.list('k/', { startAfter: 'k/00999' });
    expect(rest).toEqual({ objects: [{ key: 'k/01000', size: 0 }] });
  });

  it('rejects a list limit that is not a positive integer', async () => {
    const storage = new MemoryStorage();
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      await expect(storage.list('', { limit }), String(limit)).rejects.toBeInstanceOf(
        InvalidArgumentError,
      );
    }
  });

  it('deletes the keys that exist and ignores missing ones', async () => {
    const storage = new MemoryStorage();
    await storage.put('a', bytes('1'));
    await storage.put('b', bytes('2'));
    await storage.put('c', bytes('3'));
    await storage.delete(['a', 'c', 'missing']);
    expect(await storage.get('a')).toBeNull();
    expect(text(await storage.get('b'))).toBe('2');
    expect(await storage.get('c')).toBeNull();
    await storage.delete([]);
    expect(await listAll(storage, '')).toEqual(['b']);
  });

  it('rejects invalid keys with InvalidKeyError and stores nothing', async () => {
    const storage = new MemoryStorage();
    const invalid = [
      '',
      '/abs',
      'trailing/',
      'a//b',
      'a/./b',
      'a/../b',
      '..',
      '.',
      'a/.tmp-x',
      'tab\there',
      'nul\u0000',
      'del\u007f',
      'back\\slash',
      'k'.repeat(1025),
      'é'.repeat(513),
    ];
    for (const key of invalid) {
      const label = JSON.stringify(key).slice(0, 40);
      await expect(async () => storage.put(key, bytes('x')), label).rejects.toThrow(
        InvalidKeyError,
      );
      await expect(async () => storage.putIfAbsent(key, bytes('x')), label).rejects.toThrow(
        InvalidKeyError,
      );
      await expect(async () => storage.get(key), label).rejects.toThrow(InvalidKeyError);
      await expect(async () => storage.delete(['ok', key]), label).rejects.toThrow(InvalidKeyError);
    }
    expect(await storage.list('')).toEqual({ objects: [] });
  });

  it('accepts keys at the limits', async () => {
    const storage = new MemoryStorage();
    for (const key of ['k'.repeat(1024), 'a.b/c..d/.e/x.tmp-', 'unicode/é/ü', 'sp ace']) {
      await storage.put(key, bytes('ok'));
      expect(text(await storage.get(key)), key).toBe('ok');
    }
  });

  it('an invalid key in a delete batch deletes nothing', async () => {
    const storage = new MemoryStorage();
    await storage.put('ok', bytes('1'));
    await expect(async () => storage.delete(['ok', 'bad//key'])).rejects.toThrow(InvalidKeyError);
    expect(text(await storage.get('ok'))).toBe('1');
  });

  it('a failNext fault gives StorageUnavailableError and changes nothing', async () => {
    const storage = new MemoryStorage();
    await storage.put('k', bytes('before'));
    await storage.put('gone', bytes('x'));
    const attempts: [string, () => Promise<unknown>][] = [
      ['put', () => storage.put('k', bytes('after'))],
      ['putIfAbsent', () => storage.putIfAbsent('new', bytes('x'))],
      ['delete', () => storage.delete(['gone'])],
      ['get', () => storage.get('k')],
      ['list', () => storage.list('')],
    ];
    for (const [name, attempt] of attempts) {
      storage.faults.failNext(1);
      const error = await attempt().catch((e: unknown) => e);
      expect(error, name).toBeInstanceOf(StorageUnavailableError);
      expect((error as StorageUnavailableError).code).toBe('STORAGE_UNAVAILABLE');
    }
    expect(storage.faults.healthy).toBe(true);
    expect(await storage.list('')).toEqual({
      objects: [
        { key: 'gone', size: 1 },
        { key: 'k', size: 6 },
      ],
    });
    expect(text(await storage.get('k'))).toBe('before');
  });

  it('aims faults at one node view', async () => {
    const storage = new MemoryStorage();
    const a = storage.forNode('a');
    const b = storage.forNode('b');
    storage.faults.cutOff('a');
    await expect(a.put('k', bytes('a'))).rejects.toBeInstanceOf(StorageUnavailableError);
    await b.put('k', bytes('b'));
    storage.faults.heal('a');
    expect(text(await a.get('k'))).toBe('b');
  });
});

describe('MemoryStorage bad input', () => {
  it('rejects (never throws synchronously) on an invalid key', async () => {
    const storage = new MemoryStorage();
    let thrown: unknown;
    let result: Promise<void> | undefined;
    try {
      result = storage.put('a//b', new Uint8Array());
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeUndefined();
    await expect(result).rejects.toBeInstanceOf(InvalidKeyError);
  });
});
