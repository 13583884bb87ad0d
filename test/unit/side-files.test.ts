import { describe, expect, it } from 'vitest';
import {
  followerStatePath,
  leaderStatePath,
  outboxBasePath,
  parkedTailPath,
  redoPath,
  replacedPath,
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
