import fs from 'node:fs';
import path from 'node:path';
import { type Command, InvalidArgumentError as CommanderArgumentError, Option } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import { InvalidArgumentError } from '../../errors.ts';
import {
  type RestoreProgress,
  type RestoreResult,
  type RestoreTarget,
  restoreDatabase,
} from '../../replication/restore.ts';
import { Progress } from '../progress.ts';
import { assertDatabaseExists, listLog } from './inspect.ts';
import {
  addCommonOptions,
  type CommandContext,
  EXIT_OK,
  type ExitCode,
  exitCodesHelp,
  isoTime,
  nonNegativeIntegerOption,
  runCommand,
  type StorageOptionValues,
  withConfiguredStorage,
  writeJson,
  writeLine,
} from './shared.ts';

interface RestoreOptionValues extends StorageOptionValues {
  output: string;
  at?: number;
  seq?: number;
  force?: boolean;
}

export function registerRestoreCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('restore')
    .summary('restore a database into a local file, as of now, a sequence or a time')
    .description(
      'point-in-time restore: rebuild a database from storage into a local SQLite file, as of ' +
        'the latest changeset, a sequence number or a time',
    )
    .argument('<db>', 'database name')
    .requiredOption('-o, --output <file>', 'the SQLite file to write')
    .addOption(
      new Option(
        '--at <time>',
        'state as of this time: ISO 8601 with a zone, e.g. 2025-01-31T12:00:00Z',
      )
        .argParser(parseIsoTime)
        .conflicts('seq'),
    )
    .addOption(
      new Option('--seq <n>', 'state right after changeset n')
        .argParser(nonNegativeIntegerOption('--seq'))
        .conflicts('at'),
    )
    .option('--force', 'replace the output file if it exists');
  addCommonOptions(command, 'print the result as one JSON object').addHelpText(
    'after',
    exitCodesHelp(
      'storage has nothing for the database at that point (unknown database, a --seq past the ' +
        'end, an --at before its first commit) or its log is damaged',
    ),
  );
  command.action((db: string, options: RestoreOptionValues) =>
    runCommand(context, 'restore', options.json === true, async () => {
      const output = checkOutput(context, options.output, options.force === true);
      return withConfiguredStorage<ExitCode>(context, options, async ({ storage, prefix }) => {
        await assertDatabaseExists(storage, prefix, db);
        const target: RestoreTarget =
          options.seq !== undefined
            ? { seq: options.seq }
            : options.at !== undefined
              ? { timeMs: options.at }
              : 'latest';
        const progress = new RestoreProgressView(context, await logSizes(storage, prefix, db));
        let result: RestoreResult;
        try {
          result = await restoreDatabase({
            storage,
            prefix,
            db,
            destPath: output,
            target,
            overwrite: options.force === true,
            onProgress: (event) => progress.update(event, target),
          });
        } finally {
          progress.finish();
        }
        if (options.json) {
          writeJson(context, {
            ok: true,
            db,
            output,
            seq: result.seq,
            epoch: result.epoch,
            checksum: result.checksum,
            commitTimeMs: result.commitTimeMs,
            commitTime: isoTime(result.commitTimeMs),
            fromSnapshot: result.fromSnapshot,
            changesetsApplied: result.changesetsApplied,
            ...(result.dbChecksum === undefined ? {} : { dbChecksum: result.dbChecksum }),
          });
        } else {
          const base = result.fromSnapshot === null ? 'the log' : `snapshot ${result.fromSnapshot}`;
          writeLine(
            context,
            `restored ${db} at seq ${result.seq} (epoch ${result.epoch}, committed ${isoTime(result.commitTimeMs)}) ` +
              `into ${output}: ${base} + ${result.changesetsApplied} changesets`,
          );
        }
        return EXIT_OK;
      });
    }),
  );
}

/** The absolute output path, refused before anything is downloaded if it cannot be written. */
function checkOutput(context: CommandContext, file: string, force: boolean): string {
  const output = path.resolve(context.cwd, file);
  const directory = path.dirname(output);
  if (!fs.existsSync(directory) || !fs.statSync(directory).isDirectory()) {
    throw new InvalidArgumentError(`the folder of ${output} does not exist`);
  }
  if (fs.existsSync(output)) {
    if (fs.statSync(output).isDirectory()) {
      throw new InvalidArgumentError(`${output} is a folder; give the path of a file`);
    }
    if (!force) throw new InvalidArgumentError(`${output} exists; pass --force to replace it`);
  }
  return output;
}

export async function logSizes(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<Map<number, number>> {
  const { entries } = await listLog(storage, prefix, db);
  return new Map(entries.map((entry) => [entry.seq, entry.size]));
}

/** Two bars in turn: the snapshot download, then the changesets applied after it. */
export class RestoreProgressView {
  readonly #context: CommandContext;
  readonly #sizes: Map<number, number>;
  #snapshot: Progress | null = null;
  #log: Progress | null = null;
  #logDone = 0;

  constructor(context: CommandContext, sizes: Map<number, number>) {
    this.#context = context;
    this.#sizes = sizes;
  }

  update(event: RestoreProgress, target: RestoreTarget): void {
    if (event.phase === 'snapshot') {
      this.#snapshot ??= new Progress({
        label: `downloading snapshot ${event.seq}`,
        stream: this.#context.stderr,
        totalBytes: event.totalBytes,
      });
      this.#snapshot.update(event.doneBytes, event.totalBytes);
      return;
    }
    if (this.#log === null) {
      this.#snapshot?.finish();
      const from = event.seq;
      const until = typeof target === 'object' && 'seq' in target ? target.seq : Infinity;
      let total = 0;
      for (const [seq, size] of this.#sizes) if (seq >= from && seq <= until) total += size;
      this.#log = new Progress({
        label: 'applying changesets',
        stream: this.#context.stderr,
        totalBytes: total,
      });
    }
    this.#logDone += this.#sizes.get(event.seq) ?? 0;
    this.#log.update(this.#logDone);
  }

  finish(): void {
    this.#snapshot?.finish();
    this.#log?.finish();
  }
}

const ISO_WITH_ZONE =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})$/;

/** ISO 8601 with an explicit zone: a time without one would silently mean the local zone. */
export function parseIsoTime(value: string): number {
  const match = ISO_WITH_ZONE.exec(value.trim());
  const fail = () =>
    new CommanderArgumentError(
      '--at must be an ISO 8601 time with a zone, e.g. 2025-01-31T12:00:00Z or 2025-01-31T13:00:00+01:00',
    );
  if (!match) throw fail();
  const [, year, month, day, hour, minute, second] = match.map(Number) as number[];
  const days = new Date(Date.UTC(year ?? 0, month ?? 0, 0)).getUTCDate();
  const valid =
    month !== undefined &&
    month >= 1 &&
    month <= 12 &&
    day !== undefined &&
    day >= 1 &&
    day <= days &&
    (hour ?? 0) <= 23 &&
    (minute ?? 0) <= 59 &&
    (Number.isNaN(second) || (second ?? 0) <= 59);
  const ms = Date.parse(value.trim());
  if (!valid || Number.isNaN(ms) || ms < 0) throw fail();
  return ms;
}
