import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import { InvalidArgumentError, ReplicationGapError, SnapshotInvalidError } from '../../errors.ts';
import { restoreDatabase } from '../../replication/restore.ts';
import {
  listSnapshots,
  logKey,
  readDatabaseImage,
  readSnapshotManifest,
  type SnapshotManifest,
  writeSnapshot,
} from '../../replication/snapshot.ts';
import { maskFollowerOwnedHeader } from '../../replication/sqlite/apply.ts';
import { type Changeset, decodeChangeset } from '../../wire/changeset.ts';
import { formatBytes, Progress } from '../progress.ts';
import { assertDatabaseExists, checkSnapshotImage, listLog, readSnapshotPage1 } from './inspect.ts';
import { logSizes, RestoreProgressView } from './restore.ts';
import {
  addCommonOptions,
  type CommandContext,
  EXIT_OK,
  type ExitCode,
  exitCodesHelp,
  runCommand,
  type StorageOptionValues,
  withConfiguredStorage,
  writeJson,
  writeLine,
} from './shared.ts';

interface SnapshotOptionValues extends StorageOptionValues {
  tempDir?: string;
}

export function registerSnapshotCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('snapshot')
    .summary('take a snapshot now, from what storage holds')
    .description(
      'take a snapshot of a database now, from storage alone: restore its latest state into a ' +
        'temporary file, upload it as the snapshot at that sequence and read it back to check ' +
        'it; does nothing when the latest sequence already has a snapshot',
    )
    .argument('<db>', 'database name')
    .option('--temp-dir <dir>', 'where the temporary copy goes (default: the system temp folder)');
  addCommonOptions(command, 'print the result as one JSON object').addHelpText(
    'after',
    exitCodesHelp('unknown database, a damaged log, or the uploaded snapshot did not read back'),
  );
  command.action((db: string, options: SnapshotOptionValues) =>
    runCommand(context, 'snapshot', options.json === true, async () => {
      const tempRoot = path.resolve(context.cwd, options.tempDir ?? os.tmpdir());
      if (!fs.existsSync(tempRoot) || !fs.statSync(tempRoot).isDirectory()) {
        throw new InvalidArgumentError(`--temp-dir ${tempRoot} is not a folder`);
      }
      return withConfiguredStorage<ExitCode>(context, options, async ({ storage, prefix }) => {
        await assertDatabaseExists(storage, prefix, db);
        const result = await takeSnapshot(context, storage, prefix, db, tempRoot);
        const { manifest, skipped } = result;
        if (options.json) {
          writeJson(context, {
            ok: true,
            db,
            seq: manifest.seq,
            skipped,
            epoch: manifest.epoch,
            rawBytes: manifest.rawBytes,
            storedBytes: manifest.parts.reduce((sum, part) => sum + part.storedBytes, 0),
            parts: manifest.parts.length,
            sha256: manifest.sha256,
          });
        } else if (skipped) {
          writeLine(
            context,
            `${db}: the latest sequence ${manifest.seq} already has a snapshot; nothing to do`,
          );
        } else {
          const stored = manifest.parts.reduce((sum, part) => sum + part.storedBytes, 0);
          writeLine(
            context,
            `${db}: snapshot at seq ${manifest.seq} (epoch ${manifest.epoch}), ` +
              `${formatBytes(manifest.rawBytes)} in ${manifest.parts.length} parts, ${formatBytes(stored)} stored`,
          );
        }
        return EXIT_OK;
      });
    }),
  );
}

async function takeSnapshot(
  context: CommandContext,
  storage: StorageBackend,
  prefix: string,
  db: string,
  tempRoot: string,
): Promise<{ manifest: SnapshotManifest; skipped: boolean }> {
  const { entries } = await listLog(storage, prefix, db);
  const latestSnapshot = (await listSnapshots(storage, prefix, db)).at(-1);
  const latestLog = entries.at(-1)?.seq;
  if (latestLog === undefined || (latestSnapshot !== undefined && latestSnapshot >= latestLog)) {
    const seq = latestSnapshot ?? 0;
    const existing = await readSnapshotManifest(storage, prefix, db, seq);
    if (!existing) throw new SnapshotInvalidError(`snapshot ${seq} of ${db} vanished meanwhile`);
    return { manifest: existing, skipped: true };
  }

  const seq = latestLog;
  const dir = fs.mkdtempSync(path.join(tempRoot, 'hadb-snapshot-'));
  try {
    const file = path.join(dir, 'image.db');
    const restoreView = new RestoreProgressView(context, await logSizes(storage, prefix, db));
    let restored: Awaited<ReturnType<typeof restoreDatabase>>;
    try {
      restored = await restoreDatabase({
        storage,
        prefix,
        db,
        destPath: file,
        target: { seq },
        onProgress: (event) => restoreView.update(event, { seq }),
      });
    } finally {
      restoreView.finish();
    }
    const head = await readChangeset(storage, prefix, db, seq);
    if (Buffer.from(head.checksum).toString('hex') !== restored.checksum) {
      throw new SnapshotInvalidError(`changeset ${seq} of ${db} changed while it was restored`);
    }
    const page1 = await leaderPage1(storage, prefix, db, head, restored.fromSnapshot);
    assertSamePage1(file, page1, head.pageSize);

    const totalBytes = head.pageSize * head.dbSizePages;
    const upload = new Progress({
      label: `uploading snapshot ${seq}`,
      stream: context.stderr,
      totalBytes,
    });
    let written: SnapshotManifest;
    try {
      written = await writeSnapshot(
        storage,
        {
          prefix,
          db,
          seq,
          epoch: head.epoch,
          checksum: head.checksum,
          pageSize: head.pageSize,
          dbSizePages: head.dbSizePages,
          commitTimeMs: head.commitTimeMs,
        },
        readDatabaseImage(file, {
          pageSize: head.pageSize,
          dbSizePages: head.dbSizePages,
          overlay: new Map([[1, page1]]),
        }),
        { onProgress: (done) => upload.update(done) },
      );
    } finally {
      upload.finish();
    }

    // Two writers of one seq overwrite each other's parts: read back what is committed now.
    const committed = await readSnapshotManifest(storage, prefix, db, seq);
    if (!committed || committed.sha256 !== written.sha256) {
      throw new SnapshotInvalidError(`snapshot ${seq} of ${db} changed while it was written`);
    }
    const check = new Progress({
      label: `checking snapshot ${seq}`,
      stream: context.stderr,
      totalBytes,
    });
    try {
      await checkSnapshotImage(storage, prefix, committed, (done) => check.update(done));
    } finally {
      check.finish();
    }
    return { manifest: committed, skipped: false };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function readChangeset(
  storage: StorageBackend,
  prefix: string,
  db: string,
  seq: number,
): Promise<Changeset> {
  const bytes = await storage.get(logKey(prefix, db, seq));
  if (bytes === null) {
    throw new ReplicationGapError(`changeset ${seq} of ${db} vanished while it was restored`);
  }
  return decodeChangeset(bytes, { db, seq });
}

/**
 * Page 1 exactly as the leader holds it at `head`: the last version shipped in a changeset, else
 * the base snapshot's. A restored file has the follower's own header bytes in page 1 (journal
 * mode, change counters), and a snapshot image must be the leader's byte for byte: the leader
 * may snapshot the same seq, and writeSnapshot calls any other image at that seq a fork.
 */
async function leaderPage1(
  storage: StorageBackend,
  prefix: string,
  db: string,
  head: Changeset,
  fromSnapshot: number | null,
): Promise<Uint8Array> {
  const floor = fromSnapshot ?? 0;
  for (let seq = head.seq; seq > floor; seq--) {
    const changeset = seq === head.seq ? head : await readChangeset(storage, prefix, db, seq);
    const first = changeset.pages[0];
    if (first?.pgno === 1) return first.data;
  }
  if (fromSnapshot === null) {
    throw new SnapshotInvalidError(`no changeset of ${db} up to ${head.seq} holds page 1`);
  }
  const manifest = await readSnapshotManifest(storage, prefix, db, fromSnapshot);
  if (!manifest) throw new SnapshotInvalidError(`snapshot ${fromSnapshot} of ${db} vanished`);
  return readSnapshotPage1(storage, prefix, manifest);
}

/** The restored page 1 and the leader's may differ only in the bytes the follower owns. */
function assertSamePage1(file: string, page1: Uint8Array, pageSize: number): void {
  const restored = Buffer.alloc(pageSize);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, restored, 0, pageSize, 0);
  } finally {
    fs.closeSync(fd);
  }
  // Copies: maskFollowerOwnedHeader zeroes a Buffer argument in place (Buffer#slice is a view).
  const masked = (page: Uint8Array) => Buffer.from(maskFollowerOwnedHeader(new Uint8Array(page)));
  if (!masked(restored).equals(masked(page1))) {
    throw new SnapshotInvalidError('page 1 of the restored image differs from the shipped one');
  }
}
