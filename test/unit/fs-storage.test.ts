import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFsStorage } from '../../src/adapters/storage/fs.ts';
import { compareKeys } from '../../src/adapters/storage/keys.ts';
import type { StorageBackend } from '../../src/adapters/storage/types.ts';
import { InvalidArgumentError, InvalidKeyError } from '../../src/errors.ts';

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (body: Uint8Array | null) => (body === null ? null : new TextDecoder().decode(body));

describe('fs storage', () => {
  let root: string;
  let store: string;
  let storage: StorageBackend;

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-'));
    store = path.join(root, 'store');
    storage = createFsStorage({ root: store });
  });

  afterEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  async function listAll(prefix: string, limit?: number): Promise<string[]> {
    const keys: string[] = [];
    let startAfter: string | undefined;
    for (;;) {
      const page = await storage.list(prefix, {
        ...(startAfter === undefined ? {} : { startAfter }),
        ...(limit === undefined ? {} : { limit }),
      });
      keys.push(...page.objects.map((object) => object.key));
      if (page.nextStartAfter === undefined) return keys;
      startAfter = page.nextStartAfter;
    }
  }

  /** Every file and directory under the store, as sorted `/`-separated relative paths. */
  function onDisk(): string[] {
    return fs
      .readdirSync(store, { recursive: true, encoding: 'utf8' })
      .map((entry) => entry.split(path.sep).join('/'))
      .sort(compareKeys);
  }

  it('round trips bytes, including empty bodies', async () => {
    const body = new Uint8Array([0, 1, 2, 255, 0]);
    await storage.put('db/changesets/0001', body);
    await storage.put('db/empty', new Uint8Array());
    expect(await storage.get('db/changesets/0001')).toEqual(body);
    expect(await storage.get('db/empty')).toEqual(new Uint8Array());
  });

  it('returns null for a missing key', async () => {
    expect(await storage.get('missing')).toBeNull();
    expect(await storage.get('missing/deeper/key')).toBeNull();
    await storage.put('file', bytes('x'));
    expect(await storage.get('file/under-a-file')).toBeNull();
    await storage.put('dir/k', bytes('x'));
    expect(await storage.get('dir')).toBeNull();
    expect(await storage.get('dir', { start: 0, end: 1 })).toBeNull();
  });

  it('put overwrites', async () => {
    await storage.put('k', bytes('first'));
    await storage.put('k', bytes('second'));
    expect(text(await storage.get('k'))).toBe('second');
  });

  it('putIfAbsent writes once and never changes the content afterwards', async () => {
    expect(await storage.putIfAbsent('fence/1', bytes('winner'))).toBe(true);
    expect(await storage.putIfAbsent('fence/1', bytes('loser'))).toBe(false);
    expect(text(await storage.get('fence/1'))).toBe('winner');
  });

  it('reads byte ranges', async () => {
    await storage.put('r', bytes('0123456789'));
    expect(text(await storage.get('r', { start: 2, end: 5 }))).toBe('234');
    expect(text(await storage.get('r', { start: 7 }))).toBe('789');
    expect(text(await storage.get('r', { start: 8, end: 100 }))).toBe('89');
    expect(text(await storage.get('r', { start: 4, end: 4 }))).toBe('');
    expect(text(await storage.get('r', { start: 50, end: 60 }))).toBe('');
    expect(await storage.get('missing', { start: 0, end: 1 })).toBeNull();
  });

  it('rejects invalid ranges', async () => {
    await storage.put('r', bytes('0123456789'));
    await expect(storage.get('r', { start: -1 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(storage.get('r', { start: 5, end: 4 })).rejects.toBeInstanceOf(
      InvalidArgumentError,
    );
    await expect(storage.get('r', { start: 1.5 })).rejects.toBeInstanceOf(InvalidArgumentError);
  });

  it('lays keys out as plain relative paths, readable by other tools', async () => {
    const body = new Uint8Array([7, 0, 255, 1]);
    await storage.put('db/log/0001', body);
    expect(await storage.putIfAbsent('db/fence/%41', bytes('f'))).toBe(true);
    expect(new Uint8Array(fs.readFileSync(path.join(store, 'db', 'log', '0001')))).toEqual(body);
    expect(fs.readFileSync(path.join(store, 'db', 'fence', '%41'), 'utf8')).toBe('f');
    expect(onDisk()).toEqual(['db', 'db/fence', 'db/fence/%41', 'db/log', 'db/log/0001']);
  });

  it('reads and lists files written by other tools, skipping names no key can have', async () => {
    fs.mkdirSync(path.join(store, 'db', 'snapshots'), { recursive: true });
    fs.writeFileSync(path.join(store, 'db', 'snapshots', '0002'), 'snap');
    fs.writeFileSync(path.join(store, 'db', 'back\\slash'), 'ignored');
    expect(text(await storage.get('db/snapshots/0002'))).toBe('snap');
    expect(await storage.list('db/')).toEqual({ objects: [{ key: 'db/snapshots/0002', size: 4 }] });
  });

  it('rejects a key whose path needs an existing object as a directory, writing nothing', async () => {
    await storage.put('a/b', bytes('object'));
    const before = onDisk();
    for (const key of ['a/b/c', 'a/b/c/d']) {
      for (const write of [
        () => storage.put(key, bytes('x')),
        () => storage.putIfAbsent(key, bytes('x')),
      ]) {
        const error = await write().then(
          () => undefined,
          (reason: unknown) => reason,
        );
        expect(error, key).toBeInstanceOf(InvalidKeyError);
        expect(String(error), key).toContain('clashes with key "a/b"');
      }
    }
    expect(onDisk()).toEqual(before);
    expect(text(await storage.get('a/b'))).toBe('object');
    expect(await listAll('')).toEqual(['a/b']);
  });

  it('rejects a key whose path is an existing directory of other keys, writing nothing', async () => {
    await storage.put('a/b/c', bytes('object'));
    const before = onDisk();
    for (const [key, clashing] of [
      ['a/b', 'a/b/c'],
      ['a', 'a/b/c'],
    ] as const) {
      for (const write of [
        () => storage.put(key, bytes('x')),
        () => storage.putIfAbsent(key, bytes('x')),
      ]) {
        const error = await write().then(
          () => undefined,
          (reason: unknown) => reason,
        );
        expect(error, key).toBeInstanceOf(InvalidKeyError);
        expect(String(error), key).toContain(`clashes with key "${clashing}"`);
      }
      expect(await storage.get(key)).toBeNull();
    }
    expect(onDisk()).toEqual(before);
    expect(text(await storage.get('a/b/c'))).toBe('object');
    expect(await listAll('')).toEqual(['a/b/c']);
  });

  it('lists in byte order of the whole key, not in directory-walk order', async () => {
    const keys = ['a/b', 'a-c', 'ab', 'B', 'a/c/d', 'a/c-', 'a/c.d', 'a%b', 'a/%25', 'é', 'z'];
    for (const key of keys) await storage.put(key, bytes(key));
    const page = await storage.list('');
    expect(page.objects.map((object) => object.key)).toEqual([...keys].sort(compareKeys));
    expect(page.nextStartAfter).toBeUndefined();
    for (const object of page.objects) expect(object.size).toBe(Buffer.byteLength(object.key));
    for (const key of keys) expect(text(await storage.get(key))).toBe(key);
  });

  it('paginates with startAfter and limit, visiting every key exactly once', async () => {
    const keys: string[] = [];
    for (const top of ['a', 'a-', 'b']) {
      for (let i = 0; i < 7; i++) keys.push(`${top}/${i}`, `${top}/${i}x/y`);
      keys.push(`${top}.txt`);
    }
    for (const key of keys) await storage.put(key, bytes(key));
    const expected = [...keys].sort(compareKeys);
    for (const limit of [1, 2, 3, 5, 1000]) expect(await listAll('', limit)).toEqual(expected);
    expect(await listAll('a/', 4)).toEqual(expected.filter((key) => key.startsWith('a/')));

    const page = await storage.list('', { startAfter: 'a/3', limit: 2 });
    expect(page.objects.map((object) => object.key)).toEqual(['a/3x/y', 'a/4']);
    expect(page.nextStartAfter).toBe('a/4');
  });

  it('lists a prefix that ends in the middle of a segment', async () => {
    const keys = ['logs/app-1', 'logs/app-2/part', 'logs/apple', 'logs/b', 'logsx', 'logs/ap'];
    for (const key of keys) await storage.put(key, bytes(key));
    expect(await listAll('logs/app')).toEqual(['logs/app-1', 'logs/app-2/part', 'logs/apple']);
    expect(await listAll('logs/app-2/pa')).toEqual(['logs/app-2/part']);
    expect(await listAll('log')).toEqual([...keys].sort(compareKeys));
    expect(await listAll('nothing/here/')).toEqual([]);
    expect(await listAll('../')).toEqual([]);
  });

  it('lists nothing before the first write', async () => {
    expect(await storage.list('')).toEqual({ objects: [] });
  });

  it('rejects invalid keys', async () => {
    for (const key of [
      '../x',
      '/abs',
      'a//b',
      '.tmp-x',
      'a/.tmp-x',
      '',
      'a/../b',
      'x'.repeat(256),
    ]) {
      await expect(storage.put(key, bytes('x')), key).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(storage.putIfAbsent(key, bytes('x')), key).rejects.toBeInstanceOf(
        InvalidKeyError,
      );
      await expect(storage.get(key), key).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(storage.delete([key]), key).rejects.toBeInstanceOf(InvalidKeyError);
    }
    expect(fs.existsSync(path.join(root, 'x'))).toBe(false);
  });

  it('ignores temporary files orphaned by a crash, and later writes still work', async () => {
    await storage.put('dir/k', bytes('v1'));
    await storage.put('top', bytes('t'));
    fs.writeFileSync(path.join(store, 'dir', '.tmp-orphan'), 'partial');
    fs.writeFileSync(path.join(store, '.tmp-orphan'), 'partial');

    expect(await listAll('')).toEqual(['dir/k', 'top']);
    await storage.put('dir/k', bytes('v2'));
    expect(await storage.putIfAbsent('dir/new', bytes('n'))).toBe(true);
    expect(text(await storage.get('dir/k'))).toBe('v2');
    expect(await listAll('')).toEqual(['dir/k', 'dir/new', 'top']);
  });

  it('deletes present keys and ignores missing ones', async () => {
    await storage.put('a/1', bytes('1'));
    await storage.put('a/2', bytes('2'));
    await storage.put('a/deep/3', bytes('3'));
    await storage.delete(['a/1', 'a/deep/3', 'missing', 'a/deep/missing', 'a/1/under-a-file']);
    expect(await listAll('')).toEqual(['a/2']);
    // A directory of other keys is not an object: deleting its key deletes nothing.
    await storage.delete(['a']);
    expect(await listAll('')).toEqual(['a/2']);
    await storage.delete(['a/2']);
    expect(await listAll('')).toEqual([]);
    expect(fs.readdirSync(store)).toEqual([]);
    await storage.put('a/deep/3', bytes('again'));
    expect(text(await storage.get('a/deep/3'))).toBe('again');
  });

  it('lets exactly one of many concurrent putIfAbsent calls win', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => storage.putIfAbsent('fence/race', bytes(`writer-${i}`))),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    expect(text(await storage.get('fence/race'))).toBe(`writer-${results.indexOf(true)}`);
    expect(await listAll('')).toEqual(['fence/race']);
  });

  it('keeps puts and deletes of neighbours consistent when they interleave', async () => {
    await Promise.all(
      Array.from({ length: 30 }, async (_, i) => {
        await storage.put(`shared/${i}`, bytes(String(i)));
        if (i % 2 === 0) await storage.delete([`shared/${i}`]);
      }),
    );
    const expected = Array.from({ length: 15 }, (_, i) => `shared/${2 * i + 1}`).sort(compareKeys);
    expect(await listAll('shared/')).toEqual(expected);
  });
});
