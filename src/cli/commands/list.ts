import type { Command } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import { listDatabaseNames } from '../../replication/database-names.ts';
import { listSnapshots } from '../../replication/snapshot.ts';
import { formatBytes } from '../progress.ts';
import { listLog } from './inspect.ts';
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

export interface DatabaseSummary {
  db: string;
  /** The highest sequence with a changeset or a snapshot; null when there is neither. */
  latestSeq: number | null;
  snapshots: number;
  latestSnapshotSeq: number | null;
  changesets: number;
  logBytes: number;
  /** The oldest changeset kept (the log below it was compacted or never existed). */
  firstLogSeq: number | null;
}

export function registerListCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('list')
    .summary('list the databases under the prefix')
    .description(
      'list the databases under the prefix, with their latest sequence, snapshot count and log size',
    );
  addCommonOptions(
    command,
    'print { ok, prefix, databases: [...] } as one JSON object',
  ).addHelpText(
    'after',
    exitCodesHelp('the listing failed (no databases under the prefix is not a failure)'),
  );
  command.action((options: StorageOptionValues) =>
    runCommand(context, 'list', options.json === true, async () => {
      return withConfiguredStorage<ExitCode>(context, options, async ({ storage, prefix }) => {
        const databases: DatabaseSummary[] = [];
        for await (const db of listDatabaseNames(storage, prefix)) {
          const summary = await summarize(storage, prefix, db);
          // A folder with neither a log nor snapshots is something else sharing the prefix.
          if (summary.latestSeq !== null) databases.push(summary);
        }
        if (options.json) {
          writeJson(context, { ok: true, prefix, databases });
        } else {
          printTable(context, prefix, databases);
        }
        return EXIT_OK;
      });
    }),
  );
}

async function summarize(
  storage: StorageBackend,
  prefix: string,
  db: string,
): Promise<DatabaseSummary> {
  const { entries } = await listLog(storage, prefix, db);
  const snapshots = await listSnapshots(storage, prefix, db);
  const lastLog = entries.at(-1)?.seq ?? null;
  const lastSnapshot = snapshots.at(-1) ?? null;
  const latestSeq =
    lastLog === null
      ? lastSnapshot
      : lastSnapshot === null
        ? lastLog
        : Math.max(lastLog, lastSnapshot);
  return {
    db,
    latestSeq,
    snapshots: snapshots.length,
    latestSnapshotSeq: lastSnapshot,
    changesets: entries.length,
    logBytes: entries.reduce((sum, entry) => sum + entry.size, 0),
    firstLogSeq: entries[0]?.seq ?? null,
  };
}

function printTable(context: CommandContext, prefix: string, databases: DatabaseSummary[]): void {
  if (databases.length === 0) {
    writeLine(context, `no databases under prefix ${JSON.stringify(prefix)}`);
    return;
  }
  const header = ['DATABASE', 'LATEST SEQ', 'SNAPSHOTS', 'CHANGESETS', 'LOG SIZE'];
  const rows = databases.map((d) => [
    d.db,
    String(d.latestSeq ?? '-'),
    String(d.snapshots),
    String(d.changesets),
    formatBytes(d.logBytes),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const format = (cells: string[]) =>
    cells
      .map((cell, column) =>
        column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join('  ')
      .trimEnd();
  writeLine(context, format(header));
  for (const row of rows) writeLine(context, format(row));
}
