/**
 * The StorageBackend contract (src/adapters/storage/types.ts and keys.ts), written once and run
 * against every backend. Call `storageContract(open)` inside a `describe`; `open` runs before each
 * test and `cleanup` after it. Every test writes only under its own random prefix, so a harness
 * may hand out the same backend (bucket, folder) to every test.
 *
 * No test writes a key that is also a "directory" of other keys (`a/b` and `a/b/c`): the
 * filesystem backend refuses that by design.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, expect, it } from 'vitest';
import type { ListOptions, StorageBackend } from '../../src/adapters/storage/types.ts';
import {
  InvalidArgumentError,
  InvalidKeyError,
  StorageUnavailableError,
} from '../../src/errors.ts';
import { bounded, DOWN_BOUND_MS, expectUnavailable } from './down.ts';

export interface StorageHarness {
  storage: StorageBackend;
  /** A client whose backend is unreachable or down. It must open; its calls must fail. */
  openDown?: () => Promise<StorageBackend>;
  /** Closes `storage` and whatever the harness made; clients from `openDown` are closed by the tests. */
  cleanup(): Promise<void>;
}

/** How long a call to a down backend may take to reject. */
const RACERS = 16;
const MIB = 1024 * 1024;

const bytes = (text: string) => new TextEncoder().encode(text);
const text = (body: Uint8Array | null) => (body === null ? null : new TextDecoder().decode(body));
const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

export function storageContract(open: () => Promise<StorageHarness>): void {
  let harness: StorageHarness;
  let storage: StorageBackend;
  let p: string;

  beforeEach(async () => {
    harness = await open();
    storage = harness.storage;
    p = `sc-${randomBytes(6).toString('hex')}`;
  });

  afterEach(async () => {
    await harness.cleanup();
  });

  /** Every key under `prefix`, following `nextStartAfter` page by page. */
  async function listAll(prefix: string, options: ListOptions = {}) {
    const objects: { key: string; size: number }[] = [];
    let startAfter = options.startAfter;
    for (let pages = 0; pages < 1000; pages++) {
      const page = await storage.list(prefix, {
        ...(startAfter === undefined ? {} : { startAfter }),
        ...(options.limit === undefined ? {} : { limit: options.limit }),
      });
      if (options.limit !== undefined) {
        expect(page.objects.length).toBeLessThanOrEqual(options.limit);
      }
      objects.push(...page.objects);
      if (page.nextStartAfter === undefined) return objects;
      startAfter = page.nextStartAfter;
    }
    throw new Error(`listing ${prefix} did not end after 1000 pages`);
  }

  async function keysUnder(prefix: string, options: ListOptions = {}): Promise<string[]> {
    return (await listAll(prefix, options)).map((object) => object.key);
  }

  it('round trips bodies byte for byte: empty, all byte values, 1 MiB, a view', async () => {
    const backing = randomBytes(300);
    const bodies: [string, Uint8Array][] = [
      ['empty', new Uint8Array()],
      ['all', Uint8Array.from({ length: 256 }, (_, i) => i)],
      ['mib', new Uint8Array(randomBytes(MIB))],
      // Only the viewed bytes, not the whole backing buffer.
      ['view', new Uint8Array(backing.buffer, backing.byteOffset + 11, 200)],
    ];
    for (const [name, body] of bodies) {
      await storage.put(`${p}/${name}`, body);
      expectBytes(await storage.get(`${p}/${name}`), body, name);
    }
    expect(await listAll(`${p}/`)).toEqual(
      bodies
        .map(([name, body]) => ({ key: `${p}/${name}`, size: body.byteLength }))
        .sort((a, b) => byteOrder(a.key, b.key)),
    );
  });

  it('reads a missing key as null, also a key that is only a prefix of others', async () => {
    await storage.put(`${p}/dir/object`, bytes('x'));
    for (const key of [`${p}/missing`, `${p}/dir`, `${p}/dir/object/below`, `${p}/di`]) {
      expect(await storage.get(key), key).toBeNull();
      expect(await storage.get(key, { start: 0, end: 1 }), `${key} ranged`).toBeNull();
    }
  });

  it('does not keep or hand out the caller’s buffers', async () => {
    const key = `${p}/k`;
    const body = bytes('abcdef');
    await storage.put(key, body);
    body.fill(0x7a);
    const read = await storage.get(key);
    expect(text(read)).toBe('abcdef');
    read?.fill(0x79);
    (await storage.get(key, { start: 1, end: 3 }))?.fill(0x78);
    expect(text(await storage.get(key))).toBe('abcdef');
  });

  it('reads byte ranges, end exclusive and clamped to the size', async () => {
    const key = `${p}/ranged`;
    const body = Uint8Array.from({ length: 100 }, (_, i) => i + 1);
    await storage.put(key, body);
    const cases: [string, { start: number; end?: number }, Uint8Array][] = [
      ['start only', { start: 10 }, body.subarray(10)],
      ['start 0', { start: 0 }, body],
      ['start and end', { start: 10, end: 20 }, body.subarray(10, 20)],
      ['one byte', { start: 99, end: 100 }, body.subarray(99)],
      ['end beyond the size', { start: 90, end: 1000 }, body.subarray(90)],
      ['whole, end at the size', { start: 0, end: 100 }, body],
      ['start at the size', { start: 100 }, new Uint8Array()],
      ['start at the size, end beyond', { start: 100, end: 200 }, new Uint8Array()],
      ['empty range', { start: 5, end: 5 }, new Uint8Array()],
    ];
    for (const [name, range, expected] of cases) {
      expectBytes(await storage.get(key, range), expected, name);
    }
  });

  it('reads ranges of an empty and of a large object', async () => {
    await storage.put(`${p}/empty`, new Uint8Array());
    expectBytes(await storage.get(`${p}/empty`, { start: 0 }), new Uint8Array(), 'empty, start 0');
    expectBytes(
      await storage.get(`${p}/empty`, { start: 0, end: 10 }),
      new Uint8Array(),
      'empty, end beyond',
    );
    const large = new Uint8Array(randomBytes(MIB + 7));
    await storage.put(`${p}/large`, large);
    const start = 512 * 1024 - 3;
    expectBytes(
      await storage.get(`${p}/large`, { start, end: start + 300_001 }),
      large.subarray(start, start + 300_001),
      'middle',
    );
    expectBytes(
      await storage.get(`${p}/large`, { start: MIB }),
      large.subarray(MIB),
      'tail of a large object',
    );
  });

  it('rejects invalid ranges and list limits with InvalidArgumentError', async () => {
    await storage.put(`${p}/k`, bytes('abc'));
    for (const range of [
      { start: -1 },
      { start: 5, end: 4 },
      { start: 1.5 },
      { start: 0, end: 1.5 },
    ]) {
      await expect(storage.get(`${p}/k`, range), JSON.stringify(range)).rejects.toBeInstanceOf(
        InvalidArgumentError,
      );
    }
    for (const limit of [0, -1, 1.5]) {
      await expect(storage.list(`${p}/`, { limit }), `limit ${limit}`).rejects.toBeInstanceOf(
        InvalidArgumentError,
      );
    }
  });

  it('putIfAbsent writes once and keeps the first body; after a delete it writes again', async () => {
    const key = `${p}/fence/0001`;
    expect(await storage.putIfAbsent(key, bytes('winner'))).toBe(true);
    expect(await storage.putIfAbsent(key, bytes('loser'))).toBe(false);
    expect(await storage.putIfAbsent(key, new Uint8Array())).toBe(false);
    expect(text(await storage.get(key))).toBe('winner');
    await storage.put(`${p}/fence/0002`, bytes('put'));
    expect(await storage.putIfAbsent(`${p}/fence/0002`, bytes('loser'))).toBe(false);
    expect(text(await storage.get(`${p}/fence/0002`))).toBe('put');
    await storage.delete([key]);
    expect(await storage.putIfAbsent(key, bytes('again'))).toBe(true);
    expect(text(await storage.get(key))).toBe('again');
  });

  it('lets exactly one of many concurrent putIfAbsent calls win, and keeps its body', async () => {
    const key = `${p}/fence/race`;
    const results = await Promise.all(
      Array.from({ length: RACERS }, (_, i) => storage.putIfAbsent(key, bytes(`racer ${i}`))),
    );
    const winners = results.flatMap((won, i) => (won ? [i] : []));
    expect(winners).toHaveLength(1);
    expect(text(await storage.get(key))).toBe(`racer ${winners[0]}`);
  });

  it('put overwrites, to a larger or a smaller body', async () => {
    const key = `${p}/k`;
    await storage.put(key, bytes('first'));
    await storage.put(key, bytes('second, longer'));
    expect(text(await storage.get(key))).toBe('second, longer');
    await storage.put(key, bytes('3'));
    expect(text(await storage.get(key))).toBe('3');
    expect(await listAll(`${p}/`)).toEqual([{ key, size: 1 }]);
  });

  it('concurrent puts of one key leave one of the bodies, whole', async () => {
    const key = `${p}/k`;
    const bodies = Array.from({ length: 8 }, (_, i) => new Uint8Array(64 * 1024).fill(i + 1));
    await Promise.all(bodies.map((body) => storage.put(key, body)));
    const read = await storage.get(key);
    const first = read?.[0] ?? 0;
    expect(first).toBeGreaterThan(0);
    expectBytes(read, bodies[first - 1] ?? new Uint8Array(), 'final body');
  });

  it('lists in byte order of the key, with sizes', async () => {
    // Byte order, not locale order ('B' < '_' < 'a') nor UTF-16 order (U+FF5E < U+1F600 in
    // UTF-8, the other way round in UTF-16); '-' < '/' < '0' puts a "directory" between files.
    const names = [
      'B',
      '_',
      'a',
      'x-1',
      'x/1',
      'x/2/deep',
      'x0',
      '~',
      '\u00e9',
      '\uff5e',
      '\u{1f600}',
    ];
    const keys = names.map((name) => `${p}/${name}`);
    // Written in an order that is sorted by none of the orders above.
    for (const [index, key] of [...keys.entries()].reverse()) {
      await storage.put(key, new Uint8Array(index * 3));
    }
    expect(await listAll(`${p}/`)).toEqual(keys.map((key, index) => ({ key, size: index * 3 })));
    expect([...keys].sort(byteOrder)).toEqual(keys);
  });

  it('lists only keys starting with the prefix, which may end mid-segment', async () => {
    const names = ['lo', 'log/1', 'log/2', 'logs/1', 'lag', 'other/log/1', 'l'];
    for (const name of names) await storage.put(`${p}/${name}`, bytes(name));
    const expectations: [string, string[]][] = [
      ['lo', ['lo', 'log/1', 'log/2', 'logs/1']],
      ['log', ['log/1', 'log/2', 'logs/1']],
      ['log/', ['log/1', 'log/2']],
      ['log/1', ['log/1']],
      ['logs/', ['logs/1']],
      ['l', ['l', 'lag', 'lo', 'log/1', 'log/2', 'logs/1']],
      ['x', []],
      ['log/3', []],
      ['nothing/here/', []],
    ];
    for (const [prefix, expected] of expectations) {
      const page = await storage.list(`${p}/${prefix}`);
      expect(
        page.objects.map((object) => object.key),
        prefix,
      ).toEqual(expected.map((name) => `${p}/${name}`));
      expect(page.nextStartAfter, prefix).toBeUndefined();
    }
    expect(await storage.list(`${p}-none/`)).toEqual({ objects: [] });
  });

  it('lists only keys strictly after startAfter, which need not exist', async () => {
    const names = ['a', 'b-1', 'b/1', 'b/2/c', 'b0', 'c', 'd/e/f'];
    const keys = names.map((name) => `${p}/${name}`);
    for (const key of keys) await storage.put(key, bytes(key));
    const starts = [
      ...keys,
      '',
      'a',
      p,
      `${p}/`,
      `${p}/0`,
      `${p}/b`,
      `${p}/b/`,
      `${p}/b/1/zzz`,
      `${p}/b/2`,
      `${p}/b/2/c/d`,
      `${p}/c0`,
      `${p}/d`,
      `${p}/d/e`,
      `${p}0`,
    ];
    for (const startAfter of starts) {
      const expected = keys.filter((key) => byteOrder(key, startAfter) > 0);
      expect(await keysUnder(`${p}/`, { startAfter }), `after ${startAfter}`).toEqual(expected);
    }
  });

  it('pages through every key exactly once, in order, whatever the limit', async () => {
    const names = ['a', 'c'];
    for (let i = 1; i <= 7; i++) names.push(`b${i}-f`, `b${i}/n`, `b${i}0`);
    const keys = names.map((name) => `${p}/page/${name}`).sort(byteOrder);
    for (const key of keys) await storage.put(key, bytes(key));
    await storage.put(`${p}/pagf`, bytes('outside the prefix'));
    for (const limit of [1, 2, 5, 7, 23, 24, 1000]) {
      expect(await keysUnder(`${p}/page/`, { limit }), `limit ${limit}`).toEqual(keys);
    }
    const middle = `${p}/page/b3-f`;
    expect(await keysUnder(`${p}/page/`, { limit: 3, startAfter: middle })).toEqual(
      keys.filter((key) => byteOrder(key, middle) > 0),
    );
    const first = await storage.list(`${p}/page/`, { limit: 5 });
    expect(first.objects.map((object) => object.key)).toEqual(keys.slice(0, 5));
    expect(first.nextStartAfter).toBeDefined();
  });

  it('deletes existing keys, ignores missing ones and leaves the rest', async () => {
    const keep = [`${p}/keep`, `${p}/dir/keep`, `${p}/gone-not`];
    const gone = [`${p}/gone`, `${p}/dir/gone`];
    for (const key of [...keep, ...gone]) await storage.put(key, bytes(key));
    await storage.delete([gone[0] ?? '', `${p}/never`, `${p}/dir`, gone[1] ?? '', `${p}/x/y`]);
    await storage.delete([]);
    await storage.delete([`${p}/gone`]);
    for (const key of gone) expect(await storage.get(key), key).toBeNull();
    for (const key of keep) expect(text(await storage.get(key)), key).toBe(key);
    expect(await keysUnder(`${p}/`)).toEqual([...keep].sort(byteOrder));
  });

  it('rejects invalid keys with InvalidKeyError and writes nothing', async () => {
    const invalid = [
      '',
      `/${p}/a`,
      `${p}/a/`,
      `${p}//a`,
      `${p}/.`,
      `${p}/..`,
      `${p}/../${p}/a`,
      `${p}/./a`,
      `${p}/a\\b`,
      `${p}/a\nb`,
      `${p}/a\u0000b`,
      `${p}/a\u007fb`,
      `${p}/.tmp-1234`,
      `${p}/${'x'.repeat(1025)}`,
    ];
    for (const key of invalid) {
      const what = JSON.stringify(key);
      await expect(storage.put(key, bytes('x')), `put ${what}`).rejects.toBeInstanceOf(
        InvalidKeyError,
      );
      await expect(
        storage.putIfAbsent(key, bytes('x')),
        `putIfAbsent ${what}`,
      ).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(storage.get(key), `get ${what}`).rejects.toBeInstanceOf(InvalidKeyError);
      await expect(storage.delete([key]), `delete ${what}`).rejects.toBeInstanceOf(InvalidKeyError);
    }
    expect(await storage.list(p)).toEqual({ objects: [] });
    expect(await storage.list(`/${p}`)).toEqual({ objects: [] });
  });

  for (const method of ['put', 'putIfAbsent', 'get', 'list', 'delete'] as const) {
    const title = `down: ${method} rejects with StorageUnavailableError within ${DOWN_BOUND_MS / 1000} s`;
    it(title, { timeout: DOWN_BOUND_MS * 2 }, async (ctx) => {
      if (!harness.openDown) {
        ctx.skip('this backend has no down client');
        return;
      }
      const down = await bounded(harness.openDown(), 'opening a client of a down backend');
      try {
        const key = `${p}/down`;
        const calls = {
          put: () => down.put(key, bytes('x')),
          putIfAbsent: () => down.putIfAbsent(key, bytes('x')),
          get: () => down.get(key),
          list: () => down.list(`${p}/`),
          delete: () => down.delete([key]),
        };
        await expectUnavailable(
          calls[method]() as Promise<unknown>,
          StorageUnavailableError,
          `${method} on a down backend`,
        );
      } finally {
        // A client of a down backend may fail to close as well; that is not under test here.
        await down.close?.().catch(() => undefined);
      }
    });
  }
}

function expectBytes(actual: Uint8Array | null | undefined, expected: Uint8Array, what: string) {
  expect(actual, what).toBeInstanceOf(Uint8Array);
  if (actual === null || actual === undefined) return;
  expect(actual.byteLength, `${what}: length`).toBe(expected.byteLength);
  const differs = expected.findIndex((byte, i) => actual[i] !== byte);
  expect(differs, `${what}: first differing byte`).toBe(-1);
}
