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
  let storage: StorageBackend;

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-'));
    storage = createFsStorage({ root: path.join(root, 'store') });
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

  function directoryHolding(fileName: string): string {
    const relative = fs
      .readdirSync(root, { recursive: true, encoding: 'utf8' })
      .find((entry) => path.basename(entry) === fileName);
    if (relative === undefined) throw new Error(`no file named ${fileName}`);
    return path.dirname(path.join(root, relative));
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

  it('lists in byte order, with sizes, including keys that are prefixes of other keys', async () => {
    const keys = ['a/b', 'a-c', 'a/b/c', 'ab', 'B', 'a', 'a/b/c/d', 'a%b', 'a/%25', 'é', 'z'];
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
      for (let i = 0; i < 7; i++) keys.push(`${top}/${i}`, `${top}/${i}/x`);
      keys.push(top);
    }
    for (const key of keys) await storage.put(key, bytes(key));
    const expected = [...keys].sort(compareKeys);
    for (const limit of [1, 2, 3, 5, 1000]) expect(await listAll('', limit)).toEqual(expected);
    expect(await listAll('a/', 4)).toEqual(expected.filter((key) => key.startsWith('a/')));

    const page = await storage.list('', { startAfter: 'a/3', limit: 2 });
    expect(page.objects.map((object) => object.key)).toEqual(['a/3/x', 'a/4']);
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
    const directory = directoryHolding('k');
    fs.writeFileSync(path.join(directory, '.tmp-orphan'), 'partial');
    fs.writeFileSync(path.join(root, 'store', '.tmp-orphan'), 'partial');

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
    await storage.delete(['a/2']);
    expect(await listAll('')).toEqual([]);
    expect(fs.readdirSync(path.join(root, 'store'))).toEqual([]);
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
