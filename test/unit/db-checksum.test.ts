import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FOLLOWER_OWNED_HEADER_BYTES,
  hashPages,
  ImageChecksummer,
  imageChecksum,
  PageHashes,
  pageHash,
} from '../../src/wire/db-checksum.ts';

const PAGE_SIZE = 512;

/** A page filled from `seed`, so distinct seeds give distinct bytes. */
function pageOf(seed: number): Uint8Array {
  const data = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) data[i] = (seed * 131 + i * 7) & 0xff;
  return data;
}

type Step = { writes: [number, number][]; dbSizePages: number };

const steps = fc.array(
  fc.record({
    writes: fc.array(fc.tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 0, max: 1000 })), {
      maxLength: 12,
    }),
    dbSizePages: fc.integer({ min: 1, max: 40 }),
  }),
  { minLength: 1, maxLength: 25 },
);

/** Runs steps on a plain page array: a grown database reads zeros where nothing was written. */
function model(run: Step[]): Uint8Array[] {
  let pages: Uint8Array[] = [];
  for (const { writes, dbSizePages } of run) {
    while (pages.length < dbSizePages) pages.push(new Uint8Array(PAGE_SIZE));
    for (const [pgno, seed] of writes) if (pgno <= dbSizePages) pages[pgno - 1] = pageOf(seed);
    pages = pages.slice(0, dbSizePages);
  }
  return pages;
}

function stepPages(step: Step) {
  const last = new Map<number, Uint8Array>();
  for (const [pgno, seed] of step.writes) last.set(pgno, pageOf(seed));
  return last;
}

describe('database checksum', () => {
  it('kept up incrementally equals the checksum computed over the whole database', () => {
    fc.assert(
      fc.property(steps, (run) => {
        const hashes = PageHashes.empty();
        for (const step of run) {
          const update = hashPages(stepPages(step), step.dbSizePages, PAGE_SIZE);
          const predicted = hashes.checksumAfter(update);
          expect(hashes.apply(update)).toBe(predicted);
        }
        const whole = model(run).map((data, i) => [i + 1, data] as [number, Uint8Array]);
        expect(hashes.checksum).toBe(imageChecksum(whole));
        expect(hashes.dbSizePages).toBe(whole.length);
      }),
    );
  });

  it('does not depend on the order pages are combined in', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 30 }),
        fc.integer(),
        (pgnos, seed) => {
          const pages = pgnos.map((pgno) => [pgno, pageOf(pgno + seed)] as [number, Uint8Array]);
          const reversed = [...pages].reverse();
          expect(imageChecksum(reversed)).toBe(imageChecksum(pages));
        },
      ),
    );
  });

  it('changes when two pages swap places or one byte changes', () => {
    const a = pageOf(1);
    const b = pageOf(2);
    const base = imageChecksum([
      [1, a],
      [2, b],
    ]);
    expect(
      imageChecksum([
        [1, b],
        [2, a],
      ]),
    ).not.toBe(base);
    const flipped = new Uint8Array(b);
    flipped[100] = (flipped[100] as number) ^ 1;
    expect(
      imageChecksum([
        [1, a],
        [2, flipped],
      ]),
    ).not.toBe(base);
  });

  it('ignores the page-1 header bytes a follower owns, and only those', () => {
    const page1 = pageOf(9);
    const followerCopy = new Uint8Array(page1);
    for (const offset of FOLLOWER_OWNED_HEADER_BYTES) followerCopy[offset] = 0xee;
    expect(pageHash(1, followerCopy)).toBe(pageHash(1, page1));
    const other = new Uint8Array(page1);
    other[28] = (other[28] as number) ^ 1;
    expect(pageHash(1, other)).not.toBe(pageHash(1, page1));
  });

  it('streamed in chunks of any size equals the checksum of the pages', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 1, max: 3 * PAGE_SIZE }), { minLength: 1, maxLength: 20 }),
        (count, cuts) => {
          const pages = Array.from({ length: count }, (_, i) => pageOf(i * 3));
          const image = Buffer.concat(pages);
          const streamed = new ImageChecksummer(PAGE_SIZE);
          let at = 0;
          for (const cut of cuts) {
            streamed.update(image.subarray(at, Math.min(image.length, at + cut)));
            at = Math.min(image.length, at + cut);
          }
          streamed.update(image.subarray(at));
          expect(streamed.checksum).toBe(imageChecksum(pages.map((p, i) => [i + 1, p])));
        },
      ),
    );
  });
});
