/**
 * The operations commands: restore, snapshot, list, verify, compact, replicate and explain work
 * on storage alone; status asks running nodes. All are configured by flag, `HADB_*` variable or
 * config file.
 */
import type { Command } from 'commander';
import { registerCompactCommand } from './compact.ts';
import { registerExplainCommand } from './explain.ts';
import { registerListCommand } from './list.ts';
import { registerReplicateCommand } from './replicate.ts';
import { registerRestoreCommand } from './restore.ts';
import { type CommandContext, processContext } from './shared.ts';
import { registerSnapshotCommand } from './snapshot.ts';
import { registerStatusCommand } from './status.ts';
import { registerVerifyCommand } from './verify.ts';

export type { CommandContext } from './shared.ts';

/**
 * Adds the operations commands to `program`. Call it after `program.exitOverride(...)`: the
 * commands inherit it, so a usage error commander detects exits with the same code (2).
 */
export function registerOperationsCommands(
  program: Command,
  context: CommandContext = processContext(),
): void {
  registerRestoreCommand(program, context);
  registerSnapshotCommand(program, context);
  registerListCommand(program, context);
  registerVerifyCommand(program, context);
  registerCompactCommand(program, context);
  registerReplicateCommand(program, context);
  registerExplainCommand(program, context);
  registerStatusCommand(program, context);
}
