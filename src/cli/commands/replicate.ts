import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { InvalidArgumentError, StorageUnavailableError } from '../../errors.ts';
import { SqliteFollower } from '../../replication/sqlite/follower.ts';
import { followerStatePath } from '../../side-files.ts';
import { Progress } from '../progress.ts';
import { assertDatabaseExists } from './inspect.ts';
import {
  addCommonOptions,
  type CommandContext,
  closeStorage,
  EXIT_OK,
  exitCodesHelp,
  openConfiguredStorage,
  plainMessage,
  positiveIntegerOption,
  runCommand,
  type StorageOptionValues,
  writeJson,
  writeLine,
} from './shared.ts';

interface ReplicateOptionValues extends StorageOptionValues {
  output: string;
  interval: number;
  force?: boolean;
}

export function registerReplicateCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('replicate')
    .summary('keep a local read-only replica current until stopped')
    .description(
      'keep a read-only replica of a database in a local file, polling storage for new ' +
        'changesets, until SIGINT or SIGTERM; prints the position after every change. Open the ' +
        'file read-only meanwhile; a second signal stops at once (the replica stays crash-safe)',
    )
    .argument('<db>', 'database name')
    .requiredOption('-o, --output <file>', 'the replica file (resumed if it is one already)')
    .option(
      '--interval <ms>',
      'how often storage is polled',
      positiveIntegerOption('--interval', 3_600_000),
      1000,
    )
    .option('--force', 'replace an existing file that is not a replica of this database');
  addCommonOptions(command, 'print events as JSON lines').addHelpText(
    'after',
    exitCodesHelp(
      'unknown database, or the log cannot be followed (a gap, a fork, a damaged changeset). ' +
        'Storage becoming unreachable after the start is retried, not fatal',
    ),
  );
  command.action((db: string, options: ReplicateOptionValues) =>
    runCommand(context, 'replicate', options.json === true, () => replicate(context, db, options)),
  );
}

async function replicate(
  context: CommandContext,
  db: string,
  options: ReplicateOptionValues,
): Promise<typeof EXIT_OK> {
  const output = checkReplicaPath(context, options.output, db, options.force === true);
  const json = options.json === true;
  const { storage, prefix } = await openConfiguredStorage(context, options);
  const stopper = new AbortController();
  let stoppedBy: NodeJS.Signals | null = null;
  const stopListening = context.onStopSignal((signal) => {
    stoppedBy = signal;
    // Only the first signal stops gracefully; the next one gets the default: exit at once.
    stopListening();
    stopper.abort();
  });
  let follower: SqliteFollower | null = null;
  const download = new Progress({ label: 'downloading snapshot', stream: context.stderr });
  try {
    await assertDatabaseExists(storage, prefix, db);
    follower = await SqliteFollower.open({
      path: output,
      db,
      storage,
      prefix,
      onProgress: (done, total) => download.update(done, total),
      onEvent: (event) => {
        if (event.type !== 'bootstrapped') return;
        download.finish();
        if (json) {
          const { seq, fromSnapshot } = event;
          writeJson(context, { event: 'bootstrapped', db, seq, fromSnapshot });
        } else {
          const from = event.fromSnapshot ? `snapshot ${event.seq}` : 'an empty file';
          writeLine(context, `${db}: bootstrapped ${output} from ${from}`);
        }
      },
    });
    download.finish();
    const report = () => {
      const position = follower?.position;
      if (!position) return;
      if (json) {
        writeJson(context, {
          event: 'position',
          db,
          seq: position.seq,
          epoch: position.epoch,
          checksum: Buffer.from(position.checksum).toString('hex'),
          time: new Date().toISOString(),
        });
      } else {
        writeLine(
          context,
          `${new Date().toISOString()} ${db} at seq ${position.seq} (epoch ${position.epoch})`,
        );
      }
    };
    report();
    let unreachable = false;
    while (!stopper.signal.aborted) {
      try {
        const applied = await follower.pull();
        if (unreachable) context.stderr.write(`hadb replicate: storage is reachable again\n`);
        unreachable = false;
        if (applied > 0) report();
      } catch (error) {
        // A storage outage is waited out; anything else means the log cannot be followed.
        if (!(error instanceof StorageUnavailableError)) throw error;
        if (!unreachable) {
          context.stderr.write(`hadb replicate: ${plainMessage(error)}; retrying\n`);
        }
        unreachable = true;
      }
      await sleep(options.interval, undefined, { signal: stopper.signal }).catch(() => {});
    }
    const position = follower.position;
    if (json) {
      writeJson(context, {
        event: 'stopped',
        db,
        seq: position.seq,
        epoch: position.epoch,
        signal: stoppedBy,
      });
    } else {
      writeLine(context, `${db}: stopped at seq ${position.seq} (epoch ${position.epoch})`);
    }
    return EXIT_OK;
  } finally {
    download.finish();
    follower?.close();
    stopListening();
    await closeStorage(storage);
  }
}

/** A file that is not already this database's replica is replaced only with --force. */
function checkReplicaPath(
  context: CommandContext,
  file: string,
  db: string,
  force: boolean,
): string {
  const output = path.resolve(context.cwd, file);
  const directory = path.dirname(output);
  if (!fs.existsSync(directory) || !fs.statSync(directory).isDirectory()) {
    throw new InvalidArgumentError(`the folder of ${output} does not exist`);
  }
  if (!fs.existsSync(output) || force) return output;
  if (fs.statSync(output).isDirectory()) {
    throw new InvalidArgumentError(`${output} is a folder; give the path of a file`);
  }
  const state = followerStatePath(output);
  let replicaOf: unknown = null;
  try {
    replicaOf = (JSON.parse(fs.readFileSync(state, 'utf8')) as { db?: unknown }).db;
  } catch {
    // Not a replica (or an unreadable state file): refused below.
  }
  if (replicaOf !== db) {
    throw new InvalidArgumentError(
      `${output} exists and is not a replica of ${db}; pass --force to replace it`,
    );
  }
  return output;
}
