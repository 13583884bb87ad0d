/**
 * A changeset: the pages one or more committed SQLite transactions changed, as the leader shipped
 * them under `{prefix}/{db}/log/{seq}`. Chained: `checksum` covers `prevChecksum`, so a follower can
 * tell a gap, a fork or a replay from the next link.
 */
export interface Changeset {
  /** Format version of the encoding. */
  version: number;
  db: string;
  epoch: number;
  seq: number;
  /** Leader's wall-clock time of the commit, ms since 1970: used only for point-in-time restore. */
  commitTimeMs: number;
  /** Checksum of the previous changeset of this database (32 zero bytes before the first). */
  prevChecksum: Uint8Array;
  /** SHA-256 over prevChecksum, the header fields and the pages. */
  checksum: Uint8Array;
  pageSize: number;
  /** Size of the database in pages after this changeset. */
  dbSizePages: number;
  /** The last version of every page touched, in ascending page number. */
  pages: ChangedPage[];
}

export interface ChangedPage {
  pgno: number;
  data: Uint8Array;
}

export type ChangesetCodec = 'none' | 'deflate-raw';

export const CHECKSUM_BYTES = 32;
export const GENESIS_CHECKSUM: Uint8Array = new Uint8Array(CHECKSUM_BYTES);
