import type { Command } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import { SnapshotInvalidError } from '../../errors.ts';
import { applyRetention, planRetention, type RetentionPlan } from '../../replication/retention.ts';
import { readSnapshotManifest } from '../../replication/snapshot.ts';
import { formatBytes, Progress } from '../progress.ts';
import { assertDatabaseExists, checkSnapshotImage, listLog } from './inspect.ts';
import {
  addCommonOptions,
  type CommandContext,
  EXIT_OK,
  type ExitCode,
  exitCodesHelp,
  positiveIntegerOption,
  runCommand,
  type StorageOptionValues,
  withConfiguredStorage,
  writeJson,
  writeLine,
} from './shared.ts';

interface CompactOptionValues extends StorageOptionValues {
  keep: number;
  force?: boolean;
}

export function registerCompactCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('compact')
    .summary('delete old snapshots and the log below the oldest one kept')
    .description(
      'retention: keep the newest N snapshots and the log from the oldest of them on; prints ' +
        'what would be deleted unless --force is given. Before deleting, the oldest snapshot ' +
        'kept is downloaded and checked, since it replaces the log below it',
    )
    .argument('<db>', 'database name')
    .requiredOption(
      '--keep <n>',
      'snapshots to keep (at least 1)',
      positiveIntegerOption('--keep', 1_000_000),
    )
    .option('--force', 'delete (without it, only print the plan)');
  addCommonOptions(
    command,
    'print the plan (and whether it was carried out) as one JSON object',
  ).addHelpText(
    'after',
    exitCodesHelp(
      'unknown database, or the oldest snapshot kept is damaged (then nothing is deleted)',
    ),
  );
  command.action((db: string, options: CompactOptionValues) =>
    runCommand(context, 'compact', options.json === true, async () => {
      return withConfiguredStorage<ExitCode>(context, options, async ({ storage, prefix }) => {
        await assertDatabaseExists(storage, prefix, db);
        const plan = await planRetention({ storage, prefix, db, keepSnapshots: options.keep });
        const sizes = new Map(
          (await listLog(storage, prefix, db)).entries.map((entry) => [entry.key, entry]),
        );
        const deletedSeqs = plan.deletedLogKeys
          .map((key) => sizes.get(key)?.seq)
          .filter((seq) => seq !== undefined);
        const deletedLogBytes = plan.deletedLogKeys.reduce(
          (sum, key) => sum + (sizes.get(key)?.size ?? 0),
          0,
        );
        const deletes = plan.deletedSnapshots.length > 0 || plan.deletedLogKeys.length > 0;
        const apply = options.force === true && deletes;
        if (apply) {
          await checkOldestKept(context, storage, prefix, plan);
          await applyRetention(storage, prefix, plan);
        }
        const summary = {
          db,
          dryRun: !apply,
          keep: options.keep,
          keptSnapshots: plan.keptSnapshots,
          deletedSnapshots: plan.deletedSnapshots,
          deletedChangesets: plan.deletedLogKeys.length,
          deletedLogBytes,
          deletedLogSeqs:
            deletedSeqs.length === 0
              ? null
              : { first: Math.min(...deletedSeqs), last: Math.max(...deletedSeqs) },
        };
        if (options.json) {
          writeJson(context, { ok: true, ...summary });
          return EXIT_OK;
        }
        if (plan.keptSnapshots.length === 0) {
          writeLine(
            context,
            `${db}: nothing to delete: without a snapshot the log is the only copy`,
          );
          return EXIT_OK;
        }
        const kept = `keeps snapshots ${plan.keptSnapshots.join(', ')} and the log from seq ${plan.keptSnapshots[0]} on`;
        if (!deletes) {
          writeLine(context, `${db}: nothing to delete (${kept})`);
          return EXIT_OK;
        }
        const snapshots =
          plan.deletedSnapshots.length === 0
            ? 'no snapshot'
            : `${plan.deletedSnapshots.length} snapshots (${plan.deletedSnapshots.join(', ')})`;
        const log =
          summary.deletedLogSeqs === null
            ? 'no changeset'
            : `${plan.deletedLogKeys.length} changesets (${summary.deletedLogSeqs.first}..${summary.deletedLogSeqs.last}, ${formatBytes(deletedLogBytes)})`;
        writeLine(
          context,
          apply
            ? `${db}: deleted ${snapshots} and ${log}; ${kept}`
            : `${db}: would delete ${snapshots} and ${log}; ${kept}. Run again with --force to delete`,
        );
        return EXIT_OK;
      });
    }),
  );
}

/** The log below the oldest snapshot kept goes: that snapshot must be whole first. */
async function checkOldestKept(
  context: CommandContext,
  storage: StorageBackend,
  prefix: string,
  plan: RetentionPlan,
): Promise<void> {
  const oldest = plan.keptSnapshots[0];
  if (oldest === undefined || plan.deletedLogKeys.length === 0) return;
  const manifest = await readSnapshotManifest(storage, prefix, plan.db, oldest);
  if (!manifest) {
    throw new SnapshotInvalidError(
      `snapshot ${oldest} of ${plan.db} vanished while planning; nothing was deleted`,
    );
  }
  const progress = new Progress({
    label: `checking snapshot ${oldest}`,
    stream: context.stderr,
    totalBytes: manifest.rawBytes,
  });
  try {
    await checkSnapshotImage(storage, prefix, manifest, (done) => progress.update(done));
  } catch (error) {
    if (!(error instanceof SnapshotInvalidError)) throw error;
    throw new SnapshotInvalidError(
      `${error.message.replace(/^SNAPSHOT_INVALID: /, '')}; nothing was deleted`,
      { cause: error },
    );
  } finally {
    progress.finish();
  }
}
