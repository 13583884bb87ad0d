/**
 * What every operations command shares: where output goes, the storage options and their
 * resolution, exit codes, and turning an error into a message and an exit code.
 */
import fs from 'node:fs';
import { type Command, InvalidArgumentError as CommanderArgumentError } from 'commander';
import type { StorageBackend } from '../../adapters/storage/types.ts';
import { openStorageFromUrl, parseStorageUrl } from '../../adapters/url.ts';
import {
  HadbError,
  InvalidArgumentError,
  ReplicationGapError,
  StorageUnavailableError,
} from '../../errors.ts';
import {
  type ConfigFlags,
  normalizePrefix,
  type ResolvedConfig,
  resolveConfig,
} from '../config.ts';
import type { ProgressStream } from '../progress.ts';

export interface OutputStream {
  write(chunk: string): unknown;
}

/** The process around a command, replaceable so a test can run commands in-process. */
export interface CommandContext {
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
  stdout: OutputStream;
  stderr: ProgressStream;
  setExitCode(code: ExitCode): void;
  /** Calls `listener` on the first SIGINT or SIGTERM; returns the function that stops listening. */
  onStopSignal(listener: (signal: NodeJS.Signals) => void): () => void;
}

export function processContext(): CommandContext {
  return {
    env: process.env,
    cwd: process.cwd(),
    stdout: process.stdout,
    stderr: process.stderr,
    setExitCode: (code) => {
      process.exitCode = code;
    },
    onStopSignal: (listener) => {
      const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];
      for (const signal of signals) process.on(signal, listener);
      return () => {
        for (const signal of signals) process.off(signal, listener);
      };
    },
  };
}

export const EXIT_OK = 0;
/** The check failed, or the data (or its absence) does not allow the operation. */
export const EXIT_FAILED = 1;
/** Bad arguments or configuration: nothing was done. */
export const EXIT_USAGE = 2;
/** Storage could not be reached. */
export const EXIT_UNREACHABLE = 3;
export type ExitCode = 0 | 1 | 2 | 3;

/** The exit-code table of a command's help, with what code 1 means for that command. */
export function exitCodesHelp(whatFails: string): string {
  return [
    '',
    'Exit codes:',
    '  0  ok',
    `  1  ${whatFails}`,
    '  2  bad usage or configuration (nothing was done)',
    '  3  storage unreachable',
    '',
    'Storage is configured by --storage, else HADB_STORAGE, else "storage" in the config file',
    '(--config, HADB_CONFIG, or ./hadb.json); the prefix likewise (--prefix, HADB_PREFIX, "prefix").',
  ].join('\n');
}

export interface StorageOptionValues extends ConfigFlags {
  json?: boolean;
}

/** Adds `--storage`, `--prefix`, `--config` and `--json`. */
export function addCommonOptions(command: Command, jsonHelp: string): Command {
  return command
    .option(
      '--storage <url>',
      'storage URL: file:///path, s3://bucket/prefix?endpoint=..., memory: (default: HADB_STORAGE, then the config file)',
    )
    .option('--prefix <prefix>', 'key prefix of the databases in storage (default: "")')
    .option(
      '--config <file>',
      'JSON config file (default: HADB_CONFIG, then ./hadb.json if present)',
    )
    .option('--json', jsonHelp);
}

export function nonNegativeIntegerOption(flag: string, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n > max) {
      throw new CommanderArgumentError(`${flag} must be an integer in 0..${max}`);
    }
    return n;
  };
}

export function positiveIntegerOption(flag: string, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const n = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN;
    if (!Number.isSafeInteger(n) || n < 1 || n > max) {
      throw new CommanderArgumentError(`${flag} must be an integer in 1..${max}`);
    }
    return n;
  };
}

export interface OpenedStorage {
  storage: StorageBackend;
  prefix: string;
  config: ResolvedConfig;
}

/**
 * Resolves the configuration and opens storage. A `file://` folder that does not exist counts as
 * unreachable (an unmounted volume looks like that), rather than as empty storage.
 */
export async function openConfiguredStorage(
  context: CommandContext,
  flags: ConfigFlags,
): Promise<OpenedStorage> {
  const config = resolveConfig({ flags: pickFlags(flags), env: context.env, cwd: context.cwd });
  const url = config.storage.value;
  if (url === undefined) {
    throw new InvalidArgumentError(
      'no storage configured: pass --storage <url>, set HADB_STORAGE, or put "storage" in hadb.json',
    );
  }
  const prefix = normalizePrefix(config.prefix.value ?? '');
  const parsed = parseStorageUrl(url);
  if (parsed.kind === 'file') {
    let isDirectory = false;
    try {
      isDirectory = fs.statSync(parsed.path).isDirectory();
    } catch {
      // Reported below.
    }
    if (!isDirectory) {
      throw new StorageUnavailableError(
        `storage folder ${parsed.path} does not exist or is not a folder`,
      );
    }
  }
  return { storage: await openStorageFromUrl(url), prefix, config };
}

function pickFlags(flags: ConfigFlags): ConfigFlags {
  const picked: ConfigFlags = {};
  if (flags.storage !== undefined) picked.storage = flags.storage;
  if (flags.prefix !== undefined) picked.prefix = flags.prefix;
  if (flags.config !== undefined) picked.config = flags.config;
  return picked;
}

export function exitCodeFor(error: unknown): ExitCode {
  if (!(error instanceof HadbError)) return EXIT_FAILED;
  switch (error.code) {
    case 'INVALID_ARGUMENT':
    case 'INVALID_KEY':
      return EXIT_USAGE;
    case 'STORAGE_UNAVAILABLE':
    case 'TIMEOUT':
      return EXIT_UNREACHABLE;
    default:
      return EXIT_FAILED;
  }
}

/** The stable code of an error, for `--json` output. */
export function errorCodeOf(error: unknown): string {
  return error instanceof HadbError ? error.code : 'ERROR';
}

/** The message without the `CODE: ` prefix HadbError puts in front. */
export function plainMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  if (error instanceof HadbError && error.message.startsWith(`${error.code}: `)) {
    return error.message.slice(error.code.length + 2);
  }
  return error.message;
}

export function writeJson(context: CommandContext, value: unknown): void {
  context.stdout.write(`${JSON.stringify(value)}\n`);
}

export function writeLine(context: CommandContext, line: string): void {
  context.stdout.write(`${line}\n`);
}

/**
 * Runs a command body and sets the exit code: the body's, or the one its error maps to. A failure
 * is a message on stderr and, with `--json`, also `{ ok: false, code, message }` on stdout.
 */
export async function runCommand(
  context: CommandContext,
  name: string,
  json: boolean,
  body: () => Promise<ExitCode>,
): Promise<void> {
  let code: ExitCode;
  try {
    code = await body();
  } catch (error) {
    code = exitCodeFor(error);
    const message = plainMessage(error);
    const errorCode = errorCodeOf(error);
    context.stderr.write(
      `hadb ${name}: ${errorCode === 'ERROR' ? '' : `${errorCode}: `}${message}\n`,
    );
    if (json) writeJson(context, { ok: false, code: errorCode, message, ...errorDetails(error) });
  }
  context.setExitCode(code);
}

/** What a script needs beyond the message: where a compacted log can still be restored from. */
function errorDetails(error: unknown): Record<string, unknown> {
  if (error instanceof ReplicationGapError && error.earliest !== undefined) {
    const { seq, commitTimeMs } = error.earliest;
    return { earliest: { seq, commitTimeMs, commitTime: isoTime(commitTimeMs) } };
  }
  return {};
}

/** Closes storage if it has anything to close (S3 sockets would keep the process alive). */
export async function closeStorage(storage: StorageBackend): Promise<void> {
  await storage.close?.();
}

/** Opens the configured storage for `work` and closes it afterwards, whatever happens. */
export async function withConfiguredStorage<T>(
  context: CommandContext,
  flags: ConfigFlags,
  work: (opened: OpenedStorage) => Promise<T>,
): Promise<T> {
  const opened = await openConfiguredStorage(context, flags);
  try {
    return await work(opened);
  } finally {
    await closeStorage(opened.storage);
  }
}

export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}
