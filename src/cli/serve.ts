import { isIP } from 'node:net';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { HadbDatabase } from '../actors/hosted-database.ts';
import { createNode, type HadbNode } from '../actors/node.ts';
import { openLeaseStoreFromUrl, openStorageFromUrl } from '../adapters/url.ts';
import { startHranaServer } from '../wire/hrana.ts';

interface ServeOptionValues {
  id: string;
  data: string;
  storage: string;
  leases: string;
  db: string[];
  listen: { host: string; port: number };
  peerListen: { host: string; port: number };
  advertise?: string;
  prefix: string;
  durability: 'async' | 'replicated';
  auth: boolean;
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

export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description(
      'run a node and serve its first database to libSQL clients over Hrana (HTTP, JSON; ' +
        '@libsql/client with an http:// URL). Writes sent to a follower go to the leader. ' +
        'The cluster secret is read from HADB_SECRET, the client auth token from HADB_AUTH_TOKEN',
    )
    .requiredOption('--id <id>', 'node id, stable across restarts')
    .requiredOption('--data <dir>', "this node's own folder (its copies of the databases)")
    .requiredOption('--storage <url>', 'storage URL shared by the cluster (file:///…, s3://…)')
    .requiredOption('--leases <url>', 'lease store URL shared by the cluster')
    .requiredOption('--db <name...>', 'databases to open; the first is served over Hrana')
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
    .option('--advertise <url>', 'the URL other nodes reach this one at (default: --peer-listen)')
    .option('--prefix <prefix>', 'key prefix in storage', '')
    .addOption(
      new Option('--durability <mode>', 'when a write is acknowledged')
        .choices(['async', 'replicated'])
        .default('replicated'),
    )
    .option('--no-auth', 'accept clients without a token (only on a loopback --listen address)')
    .action(async (options: ServeOptionValues) => {
      const fail = (message: string): never => {
        process.stderr.write(`hadb serve: ${message}\n`);
        process.exit(2);
      };
      const secret = process.env.HADB_SECRET ?? fail('set the cluster secret in HADB_SECRET');
      let authToken: string | null = process.env.HADB_AUTH_TOKEN || null;
      if (!options.auth) {
        if (!isLoopback(options.listen.host)) {
          fail('--no-auth is only accepted when --listen is a loopback address');
        }
        authToken = null;
      } else if (authToken === null) {
        fail('set the client auth token in HADB_AUTH_TOKEN (or --no-auth on a loopback address)');
      }
      await serve(options, secret, authToken).catch((error: unknown) => {
        process.stderr.write(
          `hadb serve: ${error instanceof Error ? error.message : String(error)}\n`,
        );
        process.exit(1);
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
  const node: HadbNode = await createNode({
    id: options.id,
    secret,
    dataDir: options.data,
    storage,
    leases,
    listen: options.peerListen,
    ...(options.advertise ? { advertise: options.advertise } : {}),
    prefix: options.prefix,
    durability: options.durability,
  });
  let databases: HadbDatabase[];
  try {
    databases = await Promise.all(options.db.map((name) => node.open(name)));
  } catch (error) {
    await node.close();
    throw error;
  }
  const hrana = await startHranaServer({
    host: options.listen.host,
    port: options.listen.port,
    database: databases[0] as HadbDatabase,
    authToken,
  });
  // One line on stdout once clients can connect, for scripts and tests to wait on.
  process.stdout.write(
    `${JSON.stringify({ event: 'listening', node: options.id, hrana: hrana.address, peer: node.address, db: options.db[0] })}\n`,
  );
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await hrana.close();
    await node.close();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  // The node's timers do not hold the process open; the server's socket does, until stop.
}
