/**
 * The name of every file hadb or SQLite keeps beside a database file, in one place: what a
 * removal, a restore or the leftover sweep must know about, and what an operator sees on disk.
 */

/** SQLite's write-ahead log. */
export const walPath = (db: string): string => `${db}-wal`;
/** SQLite's WAL index. */
export const shmPath = (db: string): string => `${db}-shm`;
/** SQLite's own files that belong to one database file: a new file must not meet old ones. */
export const sqliteJournalFiles = (db: string): string[] => [
  walPath(db),
  shmPath(db),
  `${db}-journal`,
];

/** A follower's position and checksum state. */
export const followerStatePath = (db: string): string => `${db}-hadb-follower.json`;
/** A leader's position, epoch and pending-ship state. */
export const leaderStatePath = (db: string): string => `${db}-hadb-leader.json`;
/** A follower's redo record of the changeset it is applying. */
export const REDO_SUFFIX = '-hadb-redo';
export const redoPath = (db: string): string => `${db}${REDO_SUFFIX}`;
/** The redo record's fixed temporary name while it is written (opening the file removes one left). */
export const redoTempPath = (db: string): string => `${redoPath(db)}.tmp`;
/** A leader's outbox; its segments are `<base>.1`, `<base>.2`, … */
export const outboxBasePath = (db: string): string => `${db}-hadb-outbox`;
/** The outbox segment numbered `n` (from 1). */
export const outboxSegmentPath = (db: string, n: number): string => `${outboxBasePath(db)}.${n}`;
/** The number of an outbox segment of `db` named by {@link outboxSegmentPath}. */
export const outboxSegmentNumber = (db: string, segment: string): number =>
  Number(segment.slice(outboxBasePath(db).length + 1));
/** A journal file set aside while a restored file replaces the database. */
export const replacedPath = (journal: string): string => `${journal}.hadb-replaced`;

/** Name parts of the temporary files written next to a database file (swept when left over). */
export const RESTORE_TEMP_INFIX = '.hadb-restore-';
export const PITR_TEMP_INFIX = '.hadb-pitr-';
/** A restore's download of a snapshot image, `unique` to this attempt. */
export const restoreTempPath = (dest: string, unique: string): string =>
  `${dest}${RESTORE_TEMP_INFIX}${unique}`;
/** A point-in-time restore's working copy, `unique` to this attempt. */
export const pitrTempPath = (dest: string, unique: string): string =>
  `${dest}${PITR_TEMP_INFIX}${unique}`;
/** The atomic writer's temporary files are `<file>.tmp-<pid>-<random>`. */
export const TEMP_MARKERS = [
  RESTORE_TEMP_INFIX,
  PITR_TEMP_INFIX,
  '-hadb-leader.json.tmp-',
  '-hadb-follower.json.tmp-',
];

/**
 * The files of a local copy beside the database file itself, follower's or SQLite's (a leader's
 * state and outbox are listed by `leaderSideFiles`, which looks on disk for the segments).
 */
export function sideFiles(db: string): string[] {
  return [walPath(db), shmPath(db), followerStatePath(db), redoPath(db)];
}

/** A parked tail: unshipped commits of `db` set aside after `seq` of `epoch`, at `now`. */
export function parkedTailPath(
  parkDir: string,
  db: string,
  epoch: number,
  afterSeq: number,
  now: number,
): string {
  return `${parkDir}/${db}.epoch-${epoch}.after-seq-${afterSeq}.${now}.hadb-parked`;
}
