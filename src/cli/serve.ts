import { isIP } from 'node:net';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { backendKindOfUrl } from '../adapters/metered.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import { openLeaseStoreFromUrl, openStorageFromUrl } from '../adapters/url.ts';
import type { HadbDatabase } from '../api-types.ts';
import {
  HRANA_STREAM_IDLE_MS,
  MAX_RESULT_BYTES,
  STATEMENT_PROCESSES,
  STATEMENT_TIMEOUT_MS,
  TRANSACTION_LIFETIME_MS,
} from '../defaults.ts';
import { messageOf } from '../error-message.ts';
import { NothingToServeError } from '../errors.ts';
import { hranaStatus } from '../hrana/codec.ts';
import { assertServableDbName } from '../hrana/routes.ts';
import { type HranaServer, startHranaServer } from '../hrana/server.ts';
import { MAX_STREAMS_PER_CLIENT } from '../hrana/streams.ts';
import { normalizePeer } from '../http/cluster-view.ts';
import { secretLengthProblem } from '../http/secrets.ts';
import { redactUrl, redactUrlsIn } from '../redact.ts';
import { listDatabaseNames } from '../replication/database-names.ts';
import { assertValidDbName, listSnapshots } from '../replication/snapshot.ts';
import { createNode, type HadbNode } from '../runtime/node.ts';
import { RELAY_PATH } from '../wire/node-protocol.ts';
import { listLog } from './commands/inspect.ts';
import { exitCodeFor } from './commands/shared.ts';
import { normalizePrefix } from './config.ts';
import {
  inspectOption,
  inspectUrlOption,
  type ObserveFlags,
  observeOptions,
  transitionsOption,
} from './observe.ts';

interface ServeOptionValues {
  id: string;
  data: string;
  storage: string;
  leases: string;
  db?: string[];
  allDatabases?: boolean;
  transactionTimeout: number;
  transactionLifetime: number;
  maxStreamsPerClient: number;
  statementTimeout: number;
  maxResultBytes: number;
  statementProcesses: number;
  listen: { host: string; port: number };
  peerListen: { host: string; port: number };
  advertise?: string;
  prefix: string;
  init?: boolean;
  durability: 'async' | 'replicated';
  auth: boolean;
  transitions?: string;
  inspect?: string[];
  inspectUrl: string;
}

/** `host:port`, `[v6]:port` or `:port` (loopback). */
export function parseHostPort(flag: string) {
  return (value: string): { host: string; port: number } => {
    const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
    const port = Number(match?.[3]);
    if (!match || !Number.isInteger(port) || port > 65_535) {
      throw new InvalidArgumentError(`${flag} must be host:port, got ${JSON.stringify(value)}`);
    }
    return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
  };
}

/** A node address others can be told: http(s)://host:port, nothing secret in it. */
function parseAdvertise(value: string): string {
  if (normalizePeer(value) === null) {
    throw new InvalidArgumentError(
      `--advertise must be an http:// or https:// address without credentials, query or fragment, got ${JSON.stringify(redactUrl(value))}`,
    );
  }
  return value;
}

function parsePositiveSeconds(flag: string) {
  return (value: string): number => {
    const seconds = Number(value);
    if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600) {
      throw new InvalidArgumentError(`${flag} must be a number of seconds in (0, 3600]`);
    }
    return seconds;
  };
}

function parsePositiveInteger(flag: string) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new InvalidArgumentError(`${flag} must be a positive integer`);
    }
    return n;
  };
}

/** As the operations commands take it: `prod/` is `prod`; what cannot be a key prefix is refused. */
function parsePrefix(value: string): string {
  try {
    return normalizePrefix(value);
  } catch (error) {
    throw new InvalidArgumentError(
      `--prefix: ${(error as Error).message.replace(/^INVALID_ARGUMENT: /, '')}`,
    );
  }
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description(
      'run a node and serve its databases to libSQL clients over Hrana (HTTP, JSON; ' +
        '@libsql/client with an http:// URL): each at http://host:port/<name>/ (mind the ' +
        'trailing slash); a node serving one database also serves it at http://host:port. Writes and interactive ' +
        'transactions sent to a follower run on the leader. The cluster secret is read from ' +
        'HADB_SECRET, the client auth token from HADB_AUTH_TOKEN',
    )
    .requiredOption('--id <id>', 'node id, stable across restarts')
    .requiredOption('--data <dir>', "this node's own folder (its copies of the databases)")
    .requiredOption('--storage <url>', 'storage URL shared by the cluster (file:///…, s3://…)')
    .requiredOption('--leases <url>', 'lease store URL shared by the cluster')
    .option('--db <name...>', 'databases to serve (a single one is also served at /)')
    .option('--all-databases', 'also serve every database found under the prefix at startup')
    .addOption(
      new Option(
        '--transaction-timeout <seconds>',
        'an idle interactive transaction is rolled back after this long',
      )
        .default(HRANA_STREAM_IDLE_MS / 1000)
        .argParser(parsePositiveSeconds('--transaction-timeout')),
    )
    .addOption(
      new Option(
        '--transaction-lifetime <seconds>',
        'an interactive transaction is rolled back this long after it began, however busy',
      )
        .default(TRANSACTION_LIFETIME_MS / 1000)
        .argParser(parsePositiveSeconds('--transaction-lifetime')),
    )
    .addOption(
      new Option(
        '--max-streams-per-client <n>',
        'open Hrana streams (interactive transactions) one client address may hold',
      )
        .default(MAX_STREAMS_PER_CLIENT)
        .argParser(parsePositiveInteger('--max-streams-per-client')),
    )
    .addOption(
      new Option('--listen <host:port>', 'where libSQL clients connect')
        .default({ host: '127.0.0.1', port: 8080 }, '127.0.0.1:8080')
        .argParser(parseHostPort('--listen')),
    )
    .addOption(
      new Option('--peer-listen <host:port>', 'where the other nodes connect (port 0: any free)')
        .default({ host: '127.0.0.1', port: 0 }, '127.0.0.1:0')
        .argParser(parseHostPort('--peer-listen')),
    )
    .addOption(
      new Option(
        '--advertise <url>',
        'the URL other nodes reach this one at (default: --peer-listen)',
      ).argParser(parseAdvertise),
    )
    .addOption(
      new Option('--prefix <prefix>', 'key prefix in storage').default('').argParser(parsePrefix),
    )
    .option(
      '--init',
      'bind a storage or lease store that has no cluster identity yet to the other one (a new ' +
        'or moved store, on purpose; once). Without it a node refuses to start when one of ' +
        'the two has an identity and the other none, the mark of a mistyped path or prefix',
    )
    .addOption(
      new Option('--durability <mode>', 'when a write is acknowledged')
        .choices(['async', 'replicated'])
        .default('replicated'),
    )
    .addOption(
      new Option(
        '--statement-timeout <seconds>',
        "a client's read still running after this long is ended (STATEMENT_TIMEOUT)",
      )
        .default(STATEMENT_TIMEOUT_MS / 1000)
        .argParser(parsePositiveSeconds('--statement-timeout')),
    )
    .addOption(
      new Option(
        '--max-result-bytes <n>',
        'a read whose rows come to more bytes is refused (RESULT_TOO_LARGE); default 64 MiB',
      )
        .default(MAX_RESULT_BYTES)
        .argParser(parsePositiveInteger('--max-result-bytes')),
    )
    .addOption(
      new Option('--statement-processes <n>', 'processes running client reads at once')
        .default(STATEMENT_PROCESSES)
        .argParser(parsePositiveInteger('--statement-processes')),
    )
    .option('--no-auth', 'accept clients without a token (only on a loopback --listen address)')
    .addOption(transitionsOption())
    .addOption(inspectOption())
    .addOption(inspectUrlOption())
    .action(async (options: ServeOptionValues) => {
      const fail = (message: string): never => {
        process.stderr.write(`hadb serve: ${message}\n`);
        process.exit(2);
      };
      const secret = process.env.HADB_SECRET ?? fail('set the cluster secret in HADB_SECRET');
      const secretProblem = secretLengthProblem('HADB_SECRET (the cluster secret)', secret);
      if (secretProblem) fail(secretProblem);
      let authToken: string | null = process.env.HADB_AUTH_TOKEN || null;
      if (!options.auth) {
        if (!isLoopback(options.listen.host)) {
          fail('--no-auth is only accepted when --listen is a loopback address');
        }
        authToken = null;
      } else if (authToken === null) {
        fail('set the client auth token in HADB_AUTH_TOKEN (or --no-auth on a loopback address)');
      } else {
        const tokenProblem = secretLengthProblem(
          'HADB_AUTH_TOKEN (the client auth token)',
          authToken,
        );
        if (tokenProblem) fail(tokenProblem);
      }
      if (!options.db?.length && !options.allDatabases)
        fail('name a database with --db, or --all-databases');
      for (const name of options.db ?? []) {
        try {
          assertValidDbName(name);
          assertServableDbName(name);
        } catch (error) {
          fail(`--db: ${(error as Error).message.replace(/^INVALID_ARGUMENT: /, '')}`);
        }
      }
      await serve(options, secret, authToken).catch((error: unknown) => {
        process.stderr.write(`hadb serve: ${redactUrlsIn(messageOf(error))}\n`);
        // As the other commands: 2 for a bad URL, id or prefix, 3 for storage out of reach.
        process.exit(exitCodeFor(error));
      });
    });
}

async function serve(
  options: ServeOptionValues,
  secret: string,
  authToken: string | null,
): Promise<void> {
  const storage = await openStorageFromUrl(options.storage);
  const leases = await openLeaseStoreFromUrl(options.leases);
  const names = [...(options.db ?? [])];
  if (options.allDatabases) {
    for (const name of await databasesUnder(storage, options.prefix)) {
      if (!names.includes(name)) names.push(name);
    }
  }
  if (names.length === 0) {
    throw new NothingToServeError(
      `no databases under prefix ${JSON.stringify(options.prefix)}; name one with --db`,
    );
  }
  // The node's listener runs streams other nodes relay here once the Hrana server is up.
  let hrana: HranaServer | undefined;
  const observing = await observeOptions(options satisfies ObserveFlags, names);
  const node: HadbNode = await createNode({
    ...observing.options,
    id: options.id,
    secret,
    dataDir: options.data,
    storage,
    leases,
    listen: options.peerListen,
    ...(options.advertise ? { advertise: options.advertise } : {}),
    prefix: options.prefix,
    init: options.init === true,
    durability: options.durability,
    transactionLifetimeMs: options.transactionLifetime * 1000,
    statements: {
      timeoutMs: Math.round(options.statementTimeout * 1000),
      maxResultBytes: options.maxResultBytes,
      processes: options.statementProcesses,
    },
    backendKinds: {
      storage: backendKindOfUrl(options.storage),
      leases: backendKindOfUrl(options.leases),
    },
    routes: {
      [RELAY_PATH]: {
        method: 'POST',
        authenticated: true,
        handle: async (request) =>
          hrana
            ? hrana.relay(request)
            : {
                status: hranaStatus('STARTING'),
                body: JSON.stringify({ message: 'starting', code: 'STARTING' }),
              },
      },
    },
  });
  // One database that cannot be opened (its actor failed) is reported; the others are served.
  const databases = new Map<string, HadbDatabase>();
  const opened = await Promise.allSettled(names.map((name) => node.open(name)));
  const failures: string[] = [];
  opened.forEach((result, i) => {
    if (result.status === 'fulfilled') databases.set(result.value.name, result.value);
    else {
      const message = messageOf(result.reason);
      failures.push(message);
      process.stderr.write(`hadb serve: not serving ${names[i]}: ${message}\n`);
    }
  });
  if (databases.size === 0) {
    await node.close();
    throw new NothingToServeError(`no database could be opened (${failures.join('; ')})`);
  }
  const servedNames = [...databases.keys()];
  hrana = await startHranaServer({
    host: options.listen.host,
    port: options.listen.port,
    databases,
    authToken,
    secret,
    self: node.address ?? '',
    leaderAddress: (db) =>
      node.status().databases.find((status) => status.name === db)?.leaderAddress ?? null,
    streamIdleMs: options.transactionTimeout * 1000,
    maxStreamsPerClient: options.maxStreamsPerClient,
  });
  const served = hrana;
  // One line on stdout once clients can connect, for scripts and tests to wait on.
  process.stdout.write(
    `${JSON.stringify({ event: 'listening', node: options.id, hrana: served.address, peer: node.address, db: servedNames[0], databases: servedNames })}\n`,
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await served.close();
    await node.close();
    observing.stop();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  // The node's timers do not hold the process open; the server's socket does, until stop.
}

/** The databases `hadb list` shows: a folder under the prefix with a log or a snapshot. */
async function databasesUnder(storage: StorageBackend, prefix: string): Promise<string[]> {
  const names: string[] = [];
  for await (const name of listDatabaseNames(storage, prefix)) {
    const [snapshots, log] = await Promise.all([
      listSnapshots(storage, prefix, name),
      listLog(storage, prefix, name),
    ]);
    if (snapshots.length > 0 || log.entries.length > 0) names.push(name);
  }
  return names;
}
