/**
 * Configuration of the operations commands, from three places in this order of precedence:
 * command-line flags, `HADB_*` environment variables, then a JSON config file (`--config <file>`,
 * `HADB_CONFIG`, or `hadb.json` in the working directory when it exists). Every resolved value
 * remembers where it came from, so `hadb explain` can say why a setting has the value it has.
 */
import fs from 'node:fs';
import path from 'node:path';
import { assertValidKey } from '../adapters/storage/keys.ts';
import { InvalidArgumentError, InvalidKeyError } from '../errors.ts';

export type ConfigSource = 'flag' | 'env' | 'config' | 'default';

export interface ResolvedValue<T> {
  /** Undefined when no source set it and it has no default. */
  value: T | undefined;
  source: ConfigSource | 'unset';
  /** The flag, the environment variable or the config file that set it. */
  origin: string | null;
}

export interface ConfigFlags {
  storage?: string;
  prefix?: string;
  config?: string;
}

/** A setting these commands do not use, found in the environment or the config file. */
export interface OtherSetting {
  key: string;
  value: unknown;
  source: 'env' | 'config';
  origin: string;
}

export interface ResolvedConfig {
  /** The config file read, or null when there is none. */
  configFile: { path: string; source: ConfigSource } | null;
  storage: ResolvedValue<string>;
  prefix: ResolvedValue<string>;
  others: OtherSetting[];
}

export interface ResolveConfigInput {
  flags: ConfigFlags;
  env: Readonly<Record<string, string | undefined>>;
  cwd: string;
}

export const DEFAULT_CONFIG_FILE = 'hadb.json';
const CONFIG_ENV = 'HADB_CONFIG';

interface KeySpec {
  key: 'storage' | 'prefix';
  flag: string;
  env: string;
  default?: string;
}

const STORAGE: KeySpec = { key: 'storage', flag: '--storage', env: 'HADB_STORAGE' };
const PREFIX: KeySpec = { key: 'prefix', flag: '--prefix', env: 'HADB_PREFIX', default: '' };
const KEYS: readonly KeySpec[] = [STORAGE, PREFIX];

/** Resolves the settings; throws {@link InvalidArgumentError} for an unreadable config file. */
export function resolveConfig(input: ResolveConfigInput): ResolvedConfig {
  const { flags, env, cwd } = input;
  const file = findConfigFile(flags, env, cwd);
  const fileValues = file ? readConfigFile(file.path) : {};

  const resolve = (spec: KeySpec): ResolvedValue<string> => {
    const flagValue = flags[spec.key];
    if (flagValue !== undefined) return { value: flagValue, source: 'flag', origin: spec.flag };
    const envValue = env[spec.env];
    // An empty variable is how shells unset things in one line: treat it as not set.
    if (envValue !== undefined && envValue !== '') {
      return { value: envValue, source: 'env', origin: spec.env };
    }
    const fileValue = fileValues[spec.key];
    if (fileValue !== undefined && file) {
      if (typeof fileValue !== 'string') {
        throw new InvalidArgumentError(
          `${file.path}: "${spec.key}" must be a string, got ${JSON.stringify(fileValue)}`,
        );
      }
      return { value: fileValue, source: 'config', origin: file.path };
    }
    if (spec.default !== undefined) {
      return { value: spec.default, source: 'default', origin: null };
    }
    return { value: undefined, source: 'unset', origin: null };
  };

  return {
    configFile: file,
    storage: resolve(STORAGE),
    prefix: resolve(PREFIX),
    others: otherSettings(env, file?.path ?? null, fileValues),
  };
}

/**
 * A key prefix as the library wants it: no leading or trailing `/`. Slashes at the ends are
 * dropped (`prod/` means `prod`), anything else that cannot be a key prefix is refused.
 */
export function normalizePrefix(raw: string): string {
  const prefix = raw.replace(/^\/+|\/+$/g, '');
  if (prefix === '') return prefix;
  try {
    assertValidKey(prefix);
  } catch (error) {
    if (!(error instanceof InvalidKeyError)) throw error;
    throw new InvalidArgumentError(`prefix ${JSON.stringify(raw)} is not a valid key prefix`, {
      cause: error,
    });
  }
  return prefix;
}

// One redaction for everything hadb prints: src/redact.ts.
export { looksSecret, redactSetting, redactUrl } from '../redact.ts';

function findConfigFile(
  flags: ConfigFlags,
  env: Readonly<Record<string, string | undefined>>,
  cwd: string,
): { path: string; source: ConfigSource } | null {
  const named =
    flags.config !== undefined
      ? { path: flags.config, source: 'flag' as const, origin: '--config' }
      : env[CONFIG_ENV]
        ? { path: env[CONFIG_ENV], source: 'env' as const, origin: CONFIG_ENV }
        : null;
  if (named) {
    const file = path.resolve(cwd, named.path);
    // Asked for by name: a missing file is a mistake, not "no config".
    if (!fs.existsSync(file)) {
      throw new InvalidArgumentError(`config file ${file} (from ${named.origin}) does not exist`);
    }
    return { path: file, source: named.source };
  }
  const fallback = path.join(cwd, DEFAULT_CONFIG_FILE);
  return fs.existsSync(fallback) ? { path: fallback, source: 'default' } : null;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new InvalidArgumentError(`config file ${file} cannot be read`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    // JSON.parse quotes the input, which may hold a secret: do not chain it.
    const where = error instanceof SyntaxError ? error.message.replace(/".*"/s, '…') : '';
    throw new InvalidArgumentError(`config file ${file} is not valid JSON (${where})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`config file ${file} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** `HADB_*` variables and config keys other than the ones resolved here, for `hadb explain`. */
function otherSettings(
  env: Readonly<Record<string, string | undefined>>,
  file: string | null,
  fileValues: Record<string, unknown>,
): OtherSetting[] {
  const known = new Set<string>([CONFIG_ENV, ...KEYS.map((spec) => spec.env)]);
  const others = new Map<string, OtherSetting>();
  if (file !== null) {
    const knownKeys = new Set<string>(KEYS.map((spec) => spec.key));
    for (const [key, value] of Object.entries(fileValues)) {
      if (!knownKeys.has(key)) others.set(key, { key, value, source: 'config', origin: file });
    }
  }
  // Set after the file's: the environment wins, as it does for the known keys.
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith('HADB_') || known.has(name) || value === undefined) continue;
    const key = envToKey(name);
    others.set(key, { key, value, source: 'env', origin: name });
  }
  return [...others.values()].sort((a, b) => a.key.localeCompare(b.key));
}

/** `HADB_DATA_DIR` → `dataDir`. */
function envToKey(name: string): string {
  return name
    .slice('HADB_'.length)
    .toLowerCase()
    .replace(/_([a-z0-9])/g, (_, letter: string) => letter.toUpperCase());
}
