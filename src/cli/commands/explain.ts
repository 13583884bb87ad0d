import type { Command } from 'commander';
import { parseStorageUrl } from '../../adapters/url.ts';
import { databasesRoot } from '../../replication/database-names.ts';
import {
  normalizePrefix,
  type ResolvedConfig,
  type ResolvedValue,
  redactSetting,
  resolveConfig,
} from '../config.ts';
import {
  addCommonOptions,
  type CommandContext,
  EXIT_OK,
  EXIT_UNREACHABLE,
  EXIT_USAGE,
  exitCodeFor,
  plainMessage,
  runCommand,
  type StorageOptionValues,
  withConfiguredStorage,
  writeJson,
  writeLine,
} from './shared.ts';

interface ExplainOptionValues extends StorageOptionValues {
  check?: boolean;
}

const SOURCE_WORDS = {
  flag: 'flag',
  env: 'environment',
  config: 'config file',
  default: 'default',
  unset: 'not set',
} as const;

export function registerExplainCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('explain')
    .summary('show the resolved configuration and where each value comes from')
    .description(
      'show the resolved configuration and where each value comes from (flag, environment, ' +
        'config file or default), with secrets and credentials in URLs redacted',
    )
    .option('--check', 'also open storage and list one key, to check it can be reached');
  addCommonOptions(command, 'print the configuration as one JSON object').addHelpText(
    'after',
    [
      '',
      'Exit codes:',
      '  0  the configuration is valid (and, with --check, storage answered)',
      '  2  the configuration is invalid or incomplete (the problems are listed)',
      '  3  with --check: storage unreachable',
      '',
      'Precedence: flags, then HADB_* environment variables, then the config file (--config,',
      'HADB_CONFIG, or ./hadb.json). Values whose names look secret (secret, token, pass, pwd,',
      'key, credential, auth, cookie), and user information, fragments and secret-looking query',
      'values in URLs, are shown as ***.',
    ].join('\n'),
  );
  command.action((options: ExplainOptionValues) =>
    runCommand(context, 'explain', options.json === true, async () => {
      const flags = {
        ...(options.storage === undefined ? {} : { storage: options.storage }),
        ...(options.prefix === undefined ? {} : { prefix: options.prefix }),
        ...(options.config === undefined ? {} : { config: options.config }),
      };
      const config = resolveConfig({ flags, env: context.env, cwd: context.cwd });
      const problems = findProblems(config);
      let reachable: boolean | null = null;
      let reachError: unknown = null;
      if (options.check && problems.length === 0) {
        try {
          await withConfiguredStorage(context, flags, ({ storage, prefix }) =>
            storage.list(databasesRoot(prefix), { limit: 1 }),
          );
          reachable = true;
        } catch (error) {
          reachable = false;
          reachError = error;
        }
      }
      const code =
        problems.length > 0
          ? EXIT_USAGE
          : reachError === null
            ? EXIT_OK
            : exitCodeFor(reachError) === EXIT_USAGE
              ? EXIT_USAGE
              : EXIT_UNREACHABLE;
      const reachMessage = reachError === null ? null : plainMessage(reachError);
      if (options.json) {
        writeJson(context, {
          ok: code === EXIT_OK,
          configFile: config.configFile,
          settings: {
            storage: shown('storage', config.storage),
            prefix: shown('prefix', config.prefix),
          },
          others: config.others.map((other) => ({
            ...other,
            value: redactSetting(other.key, other.value),
          })),
          problems,
          ...(reachable === null
            ? {}
            : { reachable, ...(reachMessage ? { reachError: reachMessage } : {}) }),
        });
      } else {
        printExplanation(context, config, problems, reachable, reachMessage);
      }
      return code;
    }),
  );
}

function shown(name: string, resolved: ResolvedValue<string>) {
  return {
    value: resolved.value === undefined ? null : redactSetting(name, resolved.value),
    source: resolved.source,
    origin: resolved.origin,
  };
}

function findProblems(config: ResolvedConfig): string[] {
  const problems: string[] = [];
  const url = config.storage.value;
  if (url === undefined) {
    problems.push(
      'storage is not set: pass --storage, set HADB_STORAGE, or put "storage" in hadb.json',
    );
  } else {
    try {
      parseStorageUrl(url);
    } catch (error) {
      problems.push(`storage: ${plainMessage(error)}`);
    }
  }
  try {
    normalizePrefix(config.prefix.value ?? '');
  } catch (error) {
    problems.push(`prefix: ${plainMessage(error)}`);
  }
  return problems;
}

function printExplanation(
  context: CommandContext,
  config: ResolvedConfig,
  problems: string[],
  reachable: boolean | null,
  reachMessage: string | null,
): void {
  const file = config.configFile;
  writeLine(
    context,
    file === null
      ? 'config file: none (no --config, no HADB_CONFIG, no ./hadb.json)'
      : `config file: ${file.path} (${file.source === 'default' ? 'found in the working directory' : `from ${SOURCE_WORDS[file.source]}`})`,
  );
  const rows: [string, string, string][] = [
    row('storage', config.storage),
    row('prefix', config.prefix),
    ...config.others.map((other): [string, string, string] => [
      other.key,
      display(redactSetting(other.key, other.value)),
      `${SOURCE_WORDS[other.source]} ${other.origin}; not used by the operations commands`,
    ]),
  ];
  const keyWidth = Math.max(...rows.map(([key]) => key.length));
  const valueWidth = Math.max(...rows.map(([, value]) => value.length));
  for (const [key, value, source] of rows) {
    writeLine(context, `${key.padEnd(keyWidth)}  ${value.padEnd(valueWidth)}  (${source})`);
  }
  for (const problem of problems) writeLine(context, `problem: ${problem}`);
  if (reachable === true) writeLine(context, 'storage: reachable');
  if (reachable === false) writeLine(context, `storage: NOT reachable: ${reachMessage}`);
}

function row(name: string, resolved: ResolvedValue<string>): [string, string, string] {
  const value = resolved.value === undefined ? '-' : display(redactSetting(name, resolved.value));
  const source =
    resolved.origin === null
      ? SOURCE_WORDS[resolved.source]
      : `${SOURCE_WORDS[resolved.source]} ${resolved.origin}`;
  return [name, value, source];
}

function display(value: unknown): string {
  return JSON.stringify(value) ?? 'null';
}
