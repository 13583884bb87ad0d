import fs from 'node:fs';
import type { DbChecksum } from '../../api-types.ts';
import {
  checksumAfter,
  type PageHashes as Hashes,
  PageHashes,
  type PageHashUpdate,
  pageHash,
} from '../../wire/db-checksum.ts';

/** Pages read per system call while hashing a whole file. */
const READ_PAGES = 256;

/**
 * The page hashes of the database at `path` as `dbSizePages` pages of `pageSize` bytes: pages in
 * `overlay` (committed WAL frames, say) replace the file's, pages past its end read as zeros.
 */
export function hashDatabaseFile(
  path: string,
  pageSize: number,
  dbSizePages: number,
  overlay: ReadonlyMap<number, Uint8Array> = new Map(),
): Hashes {
  const hashes = new Array<bigint>(dbSizePages);
  const buffer = Buffer.alloc(pageSize * READ_PAGES);
  const fd = fs.openSync(path, 'r');
  try {
    for (let first = 1; first <= dbSizePages; first += READ_PAGES) {
      const count = Math.min(READ_PAGES, dbSizePages - first + 1);
      const want = count * pageSize;
      let got = 0;
      for (;;) {
        const read = fs.readSync(fd, buffer, got, want - got, (first - 1) * pageSize + got);
        got += read;
        if (read === 0 || got === want) break;
      }
      buffer.fill(0, got, want);
      for (let i = 0; i < count; i++) {
        const pgno = first + i;
        const data = overlay.get(pgno) ?? buffer.subarray(i * pageSize, (i + 1) * pageSize);
        hashes[pgno - 1] = pageHash(pgno, data);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return PageHashes.fromHashes(hashes);
}

/**
 * The checksum of the file at `path` once `update` is applied, from the checksum it has now: only
 * the pages the update replaces or cuts off are read (their current hashes leave the sum).
 */
export function checksumAfterFromFile(
  path: string,
  pageSize: number,
  sizePages: number,
  checksum: DbChecksum,
  update: PageHashUpdate,
): DbChecksum {
  const fd = fs.openSync(path, 'r');
  try {
    return checksumAfter(
      checksum,
      sizePages,
      (pgno) => pageHash(pgno, readPage(fd, pgno, pageSize)),
      update,
    );
  } finally {
    fs.closeSync(fd);
  }
}

/** A fresh buffer per page: digests are remembered by buffer. Zeros past the end of the file. */
function readPage(fd: number, pgno: number, pageSize: number): Buffer {
  const page = Buffer.alloc(pageSize);
  let got = 0;
  while (got < pageSize) {
    const read = fs.readSync(fd, page, got, pageSize - got, (pgno - 1) * pageSize + got);
    if (read === 0) break;
    got += read;
  }
  return page;
}
