import { describe, expect, it } from 'vitest';
import {
  followerStatePath,
  leaderStatePath,
  outboxBasePath,
  outboxSegmentNumber,
  outboxSegmentPath,
  parkedTailPath,
  pitrTempPath,
  redoPath,
  redoTempPath,
  replacedPath,
  restoreTempPath,
  sideFiles,
  sqliteJournalFiles,
  TEMP_MARKERS,
  walPath,
} from '../../src/side-files.ts';

// These names are on disk in deployed data folders: a rename would orphan existing files.
describe('side files', () => {
  it('names the files kept beside a database file', () => {
    expect(walPath('/d/app.db')).toBe('/d/app.db-wal');
    expect(followerStatePath('/d/app.db')).toBe('/d/app.db-hadb-follower.json');
    expect(leaderStatePath('/d/app.db')).toBe('/d/app.db-hadb-leader.json');
    expect(redoPath('/d/app.db')).toBe('/d/app.db-hadb-redo');
    expect(outboxBasePath('/d/app.db')).toBe('/d/app.db-hadb-outbox');
    expect(replacedPath('/d/app.db-wal')).toBe('/d/app.db-wal.hadb-replaced');
  });

  it('names outbox segments and the temporary files of a redo record and of restores', () => {
    expect(outboxSegmentPath('/d/app.db', 2)).toBe('/d/app.db-hadb-outbox.2');
    expect(outboxSegmentNumber('/d/app.db', '/d/app.db-hadb-outbox.12')).toBe(12);
    expect(redoTempPath('/d/app.db')).toBe('/d/app.db-hadb-redo.tmp');
    expect(restoreTempPath('/d/app.db', 'ab12')).toBe('/d/app.db.hadb-restore-ab12');
    expect(pitrTempPath('/d/app.db', '7-9')).toBe('/d/app.db.hadb-pitr-7-9');
  });

  it("lists a local copy's side files, and SQLite's journal files", () => {
    expect(sideFiles('/d/app.db')).toEqual([
      '/d/app.db-wal',
      '/d/app.db-shm',
      '/d/app.db-hadb-follower.json',
      '/d/app.db-hadb-redo',
    ]);
    expect(sqliteJournalFiles('/d/app.db')).toEqual([
      '/d/app.db-wal',
      '/d/app.db-shm',
      '/d/app.db-journal',
    ]);
  });

  it('names a parked tail by database, epoch, position and time', () => {
    expect(parkedTailPath('/park', 'app', 3, 41, 1700000000000)).toBe(
      '/park/app.epoch-3.after-seq-41.1700000000000.hadb-parked',
    );
  });

  it("marks the atomic writer's temporary state files as leftovers to sweep", () => {
    const temp = `${leaderStatePath('app.db')}.tmp-123-abc`;
    expect(TEMP_MARKERS.some((marker) => temp.slice('app.db'.length).startsWith(marker))).toBe(
      true,
    );
  });
});
