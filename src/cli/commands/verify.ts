import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import {
  ChangesetError,
  type ChangesetErrorCode,
  DatabaseDivergedError,
  HadbError,
  SnapshotInvalidError,
} from '../../errors.ts';
import { restoreDatabase } from '../../replication/restore.ts';
import {
  listSnapshots,
  readSnapshotManifest,
  type SnapshotManifest,
} from '../../replication/snapshot.ts';
import { type Changeset, decodeChangeset, GENESIS_CHECKSUM } from '../../wire/changeset.ts';
import {
  dbChecksumHex,
  hashPages,
  PageHashes,
  parseDbChecksumHex,
} from '../../wire/db-checksum.ts';
import { formatBytes, Progress, type ProgressStream } from '../progress.ts';
import { assertDatabaseExists, checkSnapshotImage, listLog } from './inspect.ts';
import {
  addCommonOptions,
  type CommandContext,
  EXIT_FAILED,
  EXIT_OK,
  type ExitCode,
  exitCodesHelp,
  plainMessage,
  runCommand,
  type StorageOptionValues,
  withConfiguredStorage,
  writeJson,
  writeLine,
} from './shared.ts';

export type VerifyProblemCode =
  | ChangesetErrorCode
  | 'REPLICATION_GAP'
  | 'SNAPSHOT_INVALID'
  | 'EPOCH_REGRESSED'
  | 'DATABASE_DIVERGED';

export interface VerifyProblem {
  /** The first sequence number found bad. */
  seq: number;
  code: VerifyProblemCode;
  message: string;
}

export interface VerifyReport {
  db: string;
  problem: VerifyProblem | null;
  changesets: number;
  logBytes: number;
  firstLogSeq: number | null;
  lastLogSeq: number | null;
  snapshots: number[];
  epochs: { first: number; last: number } | null;
  imagesChecked: boolean;
  /**
   * Changesets whose recorded database checksum was checked against the page hashes replayed from
   * the log (from seq 1 on; a compacted log has no base to replay from).
   */
  dbChecksumsChecked: number;
  /** The latest state was restored into a scratch file and checked (`--restore`). */
  restoreChecked: boolean;
  /** Keys under `log/` that are not changesets: reported, not failed. */
  strayKeys: string[];
}

interface VerifyOptionValues extends StorageOptionValues {
  images?: boolean;
  restore?: boolean;
}

/** Changesets downloaded ahead of the one being checked: hides the latency of remote storage. */
const PREFETCH = 8;
const GENESIS_HEX = Buffer.from(GENESIS_CHECKSUM).toString('hex');

export function registerVerifyCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('verify')
    .summary("check a database's log and snapshots end to end")
    .description(
      "download a database's whole log and check it: every changeset's checksum, the chain " +
        'from one to the next, no hole unless a snapshot covers it (a compacted log), each ' +
        "snapshot's manifest against the changeset at its sequence, epochs never decreasing",
    )
    .argument('<db>', 'database name')
    .option(
      '--images',
      "also download every snapshot's parts and check them against their SHA-256 and database checksum",
    )
    .option(
      '--restore',
      'also restore the latest state into a scratch file and check it against the database checksum the log records',
    );
  addCommonOptions(
    command,
    'print { ok: true, ... } or { ok: false, firstBadSeq, code, message } as one JSON object',
  ).addHelpText(
    'after',
    exitCodesHelp(
      'a problem was found (the message names the first bad sequence), or the database is unknown',
    ),
  );
  command.action((db: string, options: VerifyOptionValues) =>
    runCommand(context, 'verify', options.json === true, async () => {
      return withConfiguredStorage<ExitCode>(context, options, async ({ storage, prefix }) => {
        await assertDatabaseExists(storage, prefix, db);
        const report = await verifyDatabase(storage, prefix, db, {
          images: options.images === true,
          restore: options.restore === true,
          progressStream: context.stderr,
        });
        printReport(context, report, options.json === true);
        return report.problem === null ? EXIT_OK : EXIT_FAILED;
      });
    }),
  );
}

function printReport(context: CommandContext, report: VerifyReport, json: boolean): void {
  const { db, problem } = report;
  if (json) {
    if (problem) {
      writeJson(context, {
        ok: false,
        db,
        firstBadSeq: problem.seq,
        code: problem.code,
        message: problem.message,
      });
    } else {
      const { problem: _none, ...rest } = report;
      writeJson(context, { ok: true, ...rest });
    }
    return;
  }
  for (const key of report.strayKeys) writeLine(context, `warning: ${key} is not a changeset key`);
  if (problem) {
    writeLine(context, `${db}: FAILED at seq ${problem.seq}: ${problem.code}: ${problem.message}`);
    return;
  }
  const log =
    report.firstLogSeq === null
      ? 'no changesets'
      : `changesets ${report.firstLogSeq}..${report.lastLogSeq} (${report.changesets}, ${formatBytes(report.logBytes)})`;
  const snapshots =
    report.snapshots.length === 0 ? 'no snapshots' : `snapshots at ${report.snapshots.join(', ')}`;
  const epochs = report.epochs ? `, epochs ${report.epochs.first}..${report.epochs.last}` : '';
  const images = report.imagesChecked ? ', snapshot images checked' : '';
  writeLine(context, `${db}: ok: ${log}, ${snapshots}${epochs}${images}`);
}

interface ChainLink {
  seq: number;
  checksum: string;
  epoch: number;
}

/** Checks the log and the snapshots of `db`; stops at the first broken link of the chain. */
export async function verifyDatabase(
  storage: StorageBackend,
  prefix: string,
  db: string,
  options: { images: boolean; restore?: boolean; progressStream: ProgressStream },
): Promise<VerifyReport> {
  const { entries, strayKeys } = await listLog(storage, prefix, db);
  const logBytes = entries.reduce((sum, entry) => sum + entry.size, 0);
  const problems: VerifyProblem[] = [];

  const manifests = new Map<number, SnapshotManifest>();
  for (const seq of await listSnapshots(storage, prefix, db)) {
    try {
      const manifest = await readSnapshotManifest(storage, prefix, db, seq);
      if (manifest) manifests.set(seq, manifest);
    } catch (error) {
      if (!(error instanceof SnapshotInvalidError)) throw error;
      problems.push({ seq, code: 'SNAPSHOT_INVALID', message: plainMessage(error) });
    }
  }

  const progress = new Progress({
    label: 'checking the log',
    stream: options.progressStream,
    totalBytes: logBytes,
  });
  let previous: ChainLink = { seq: 0, checksum: GENESIS_HEX, epoch: 0 };
  let firstEpoch: number | null = null;
  let pageSize: number | undefined;
  let doneBytes = 0;
  // Every page's hash, replayed from the log's pages alone: the checksum at each seq, no image.
  let replay: PageHashes | null = entries[0]?.seq === 1 ? PageHashes.empty() : null;
  let dbChecksumsChecked = 0;
  try {
    const bodies = prefetch(
      storage,
      entries.map((entry) => entry.key),
    );
    for (const entry of entries) {
      const next = await bodies.next();
      const bytes = next.done ? null : next.value;
      doneBytes += entry.size;
      progress.update(doneBytes);
      // Deleted since the listing (compaction running): as if it had never been listed.
      if (bytes === null) continue;
      const problem = checkLink(db, entry.seq, bytes, previous, manifests, pageSize);
      if ('code' in problem) {
        problems.push(problem);
        await bodies.return(undefined);
        break;
      }
      if (previous.seq !== entry.seq - 1) replay = null;
      if (replay !== null) {
        const diverged = replayChecksum(replay, problem);
        if (diverged) {
          problems.push(diverged);
          await bodies.return(undefined);
          break;
        }
        if (problem.dbChecksum !== undefined) dbChecksumsChecked += 1;
      }
      pageSize = problem.pageSize;
      firstEpoch ??= problem.epoch;
      previous = {
        seq: entry.seq,
        checksum: Buffer.from(problem.checksum).toString('hex'),
        epoch: problem.epoch,
      };
    }
  } finally {
    progress.finish();
  }

  const lastLogSeq = entries.at(-1)?.seq ?? null;
  for (const manifest of manifests.values()) {
    if (manifest.seq === 0 && manifest.checksum !== GENESIS_HEX) {
      problems.push({
        seq: 0,
        code: 'SNAPSHOT_INVALID',
        message: `snapshot 0 has chain checksum ${manifest.checksum}, not the genesis checksum`,
      });
    }
    if (manifest.seq > 0 && (lastLogSeq === null || manifest.seq > lastLogSeq)) {
      problems.push({
        seq: manifest.seq,
        code: 'REPLICATION_GAP',
        message: `snapshot ${manifest.seq} is past the end of the log (${lastLogSeq ?? 'empty'}): storage lacks the changeset it was taken at`,
      });
    }
  }

  if (options.images) {
    const valid = [...manifests.values()];
    const total = valid.reduce((sum, manifest) => sum + manifest.rawBytes, 0);
    const images = new Progress({
      label: 'checking snapshot images',
      stream: options.progressStream,
      totalBytes: total,
    });
    let before = 0;
    try {
      for (const manifest of valid) {
        try {
          await checkSnapshotImage(storage, prefix, manifest, (done) =>
            images.update(before + done),
          );
        } catch (error) {
          if (!(error instanceof SnapshotInvalidError || error instanceof DatabaseDivergedError)) {
            throw error;
          }
          const code: VerifyProblemCode =
            error instanceof DatabaseDivergedError ? 'DATABASE_DIVERGED' : 'SNAPSHOT_INVALID';
          problems.push({ seq: manifest.seq, code, message: plainMessage(error) });
        }
        before += manifest.rawBytes;
      }
    } finally {
      images.finish();
    }
  }

  if (options.restore && problems.length === 0 && entries.length > 0) {
    const problem = await checkRestore(storage, prefix, db);
    if (problem) problems.push(problem);
  }

  problems.sort((a, b) => a.seq - b.seq);
  return {
    db,
    problem: problems[0] ?? null,
    changesets: entries.length,
    logBytes,
    firstLogSeq: entries[0]?.seq ?? null,
    lastLogSeq,
    snapshots: [...manifests.keys()].sort((a, b) => a - b),
    epochs: firstEpoch === null ? null : { first: firstEpoch, last: previous.epoch },
    imagesChecked: options.images,
    dbChecksumsChecked,
    restoreChecked: options.restore === true,
    strayKeys,
  };
}

/** Moves the replayed hashes on by `changeset`; the problem when it records another checksum. */
function replayChecksum(replay: PageHashes, changeset: Changeset): VerifyProblem | null {
  const update = hashPages(changeset.pages, changeset.dbSizePages, changeset.pageSize);
  const after = replay.apply(update);
  if (changeset.dbChecksum === undefined || changeset.dbChecksum === after) return null;
  return {
    seq: changeset.seq,
    code: 'DATABASE_DIVERGED',
    message: `changeset ${changeset.seq} records database checksum ${dbChecksumHex(changeset.dbChecksum)}, but the log's pages up to it give ${dbChecksumHex(after)}`,
  };
}

/** Restores the latest state into a scratch file: the restore checks every recorded checksum. */
async function checkRestore(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<VerifyProblem | null> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-verify-'));
  try {
    await restoreDatabase({ storage, prefix, db, destPath: path.join(dir, 'restored.db') });
    return null;
  } catch (error) {
    if (!(error instanceof HadbError)) throw error;
    const seq = error instanceof DatabaseDivergedError ? error.seq : 0;
    return { seq, code: error.code as VerifyProblemCode, message: plainMessage(error) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The decoded changeset at `seq` if it is a valid next link after `previous`, else the problem. */
function checkLink(
  db: string,
  seq: number,
  bytes: Uint8Array,
  previous: ChainLink,
  manifests: ReadonlyMap<number, SnapshotManifest>,
  pageSize: number | undefined,
): Changeset | VerifyProblem {
  let changeset: Changeset;
  try {
    changeset = decodeChangeset(bytes, {
      db,
      seq,
      ...(pageSize === undefined ? {} : { pageSize }),
    });
  } catch (error) {
    if (!(error instanceof ChangesetError)) throw error;
    return { seq, code: error.code, message: plainMessage(error) };
  }
  const prevChecksum = Buffer.from(changeset.prevChecksum).toString('hex');
  const snapshotHere = manifests.get(seq);

  // What the changeset must follow: the previous changeset, or a snapshot at the end of a hole.
  let link: ChainLink | null = previous;
  let follows = `changeset ${previous.seq}`;
  if (previous.seq !== seq - 1) {
    const before = manifests.get(seq - 1);
    if (before) {
      link = { seq: before.seq, checksum: before.checksum, epoch: before.epoch };
      follows = `snapshot ${before.seq}`;
    } else if (snapshotHere) {
      // The log below this snapshot was compacted: the snapshot vouches for this changeset.
      link = null;
    } else {
      const first = previous.seq + 1;
      const last = seq - 1;
      return {
        seq: first,
        code: 'REPLICATION_GAP',
        message: `${first === last ? `changeset ${first} is` : `changesets ${first}..${last} are`} missing and no snapshot covers ${first === last ? 'it' : 'them'}`,
      };
    }
  }
  if (link !== null && prevChecksum !== link.checksum) {
    return {
      seq,
      code: 'CHANGESET_CHAIN_BROKEN',
      message: `changeset ${seq} follows checksum ${prevChecksum}, but ${follows} has ${link.checksum}`,
    };
  }
  // Across a compacted hole too: the epoch of a later changeset never goes below an earlier one.
  const floor = link !== null && link.epoch > previous.epoch ? link : previous;
  if (changeset.epoch < floor.epoch) {
    const of = floor === link ? follows : `changeset ${previous.seq}`;
    return {
      seq,
      code: 'EPOCH_REGRESSED',
      message: `changeset ${seq} has epoch ${changeset.epoch}, lower than epoch ${floor.epoch} of ${of}`,
    };
  }
  if (snapshotHere) {
    const checksum = Buffer.from(changeset.checksum).toString('hex');
    const mismatch =
      snapshotHere.checksum !== checksum
        ? `chain checksum ${snapshotHere.checksum}, the changeset ${checksum}`
        : snapshotHere.epoch !== changeset.epoch
          ? `epoch ${snapshotHere.epoch}, the changeset ${changeset.epoch}`
          : snapshotHere.pageSize !== changeset.pageSize ||
              snapshotHere.dbSizePages !== changeset.dbSizePages
            ? `${snapshotHere.dbSizePages} pages of ${snapshotHere.pageSize} bytes, the changeset ${changeset.dbSizePages} of ${changeset.pageSize}`
            : null;
    const recorded = parseDbChecksumHex(snapshotHere.dbChecksum);
    if (
      mismatch === null &&
      recorded !== undefined &&
      changeset.dbChecksum !== undefined &&
      recorded !== changeset.dbChecksum
    ) {
      return {
        seq,
        code: 'DATABASE_DIVERGED',
        message: `snapshot ${seq} records database checksum ${dbChecksumHex(recorded)}, the changeset at its sequence ${dbChecksumHex(changeset.dbChecksum)}`,
      };
    }
    if (mismatch !== null) {
      return {
        seq,
        code: 'SNAPSHOT_INVALID',
        message: `snapshot ${seq} does not match the changeset at its sequence: the manifest has ${mismatch}`,
      };
    }
  }
  return changeset;
}

/** Bodies of `keys` in order, with up to {@link PREFETCH} downloads in flight. */
async function* prefetch(
  storage: StorageBackend,
  keys: readonly string[],
): AsyncGenerator<Uint8Array | null, void, undefined> {
  const pending: Promise<Uint8Array | null>[] = [];
  let next = 0;
  const fill = () => {
    for (let key = keys[next]; pending.length < PREFETCH && key !== undefined; key = keys[next]) {
      next += 1;
      const body = storage.get(key);
      // Awaited in order below; this only keeps a failure after an early stop from going unhandled.
      body.catch(() => {});
      pending.push(body);
    }
  };
  fill();
  for (let body = pending.shift(); body !== undefined; body = pending.shift()) {
    const value = await body;
    fill();
    yield value;
  }
}
