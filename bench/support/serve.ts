/**
 * `hadb serve` processes for benchmarks: the real command, as a user starts it, on a shared
 * folder (fs storage, fs leases). The child's stdout and stderr go to our stderr, prefixed, so
 * nothing it prints can end up after the benchmark's JSON.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';
import { log } from '../lib.ts';

const entry = path.resolve(import.meta.dirname, '../../bin/hadb.js');

export interface ServeConfig {
  /** Shared by the cluster: storage in `dir/storage`, leases in `dir/leases`. */
  dir: string;
  db: string;
  secret: string;
  authToken: string;
  durability: 'async' | 'replicated';
}

export interface ServeProcess {
  id: string;
  /** The Hrana URL, for `createClient`. */
  hrana: string;
  /** The node's own address (`/status`, `/metrics`). */
  peer: string;
  child: ChildProcess;
  /** The role of the served database now, from `GET /status`. */
  role(): Promise<string | undefined>;
  /** Storage and lease-store requests the node made so far, from `GET /metrics`. */
  requests(): Promise<{ storage: number; lease: number }>;
  /** SIGTERM (the node hands its leases over), then waits for the exit. */
  stop(): Promise<void>;
}

/** The sum of a counter's samples in Prometheus text. */
export function sumOfCounter(metrics: string, name: string): number {
  let total = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

export async function startServe(config: ServeConfig, id: string): Promise<ServeProcess> {
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('HADB_')) env[name] = value;
  }
  const args = [
    entry,
    'serve',
    '--id',
    id,
    '--data',
    path.join(config.dir, id),
    '--storage',
    pathToFileURL(path.join(config.dir, 'storage')).href,
    '--leases',
    pathToFileURL(path.join(config.dir, 'leases')).href,
    '--db',
    config.db,
    '--listen',
    '127.0.0.1:0',
    '--durability',
    config.durability,
  ];
  const child = spawn(process.execPath, args, {
    cwd: config.dir,
    env: { ...env, HADB_SECRET: config.secret, HADB_AUTH_TOKEN: config.authToken },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  readline
    .createInterface({ input: child.stderr as NodeJS.ReadableStream })
    .on('line', (line) => log(`[${id}] ${line}`));
  const listening = new Promise<{ hrana: string; peer: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${id}: not listening after 30 s`)), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${id} exited with ${code} before listening`));
    });
    readline
      .createInterface({ input: child.stdout as NodeJS.ReadableStream })
      .on('line', (line) => {
        if (!line.includes('"listening"')) {
          log(`[${id}] ${line}`);
          return;
        }
        clearTimeout(timer);
        resolve(JSON.parse(line) as { hrana: string; peer: string });
      });
  });
  const { hrana, peer } = await listening.catch((error: unknown) => {
    child.kill('SIGKILL');
    throw error;
  });
  return {
    id,
    hrana,
    peer,
    child,
    async role() {
      const status = (await (await fetch(`${peer}/status`)).json()) as {
        databases: { name: string; role: string }[];
      };
      return status.databases.find((database) => database.name === config.db)?.role;
    },
    async requests() {
      const metrics = await (await fetch(`${peer}/metrics`)).text();
      return {
        storage: sumOfCounter(metrics, 'hadb_storage_requests_total'),
        lease: sumOfCounter(metrics, 'hadb_lease_requests_total'),
      };
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Waits (up to `timeoutMs`) until one process leads the database and the other follows. */
export async function leaderAndFollower(
  nodes: readonly ServeProcess[],
  timeoutMs = 30_000,
): Promise<{ leader: ServeProcess; follower: ServeProcess }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const roles = await Promise.all(nodes.map((node) => node.role().catch(() => undefined)));
    const leader = nodes[roles.indexOf('leader')];
    const follower = nodes[roles.indexOf('follower')];
    if (leader && follower) return { leader, follower };
    if (Date.now() > deadline) throw new Error(`no leader and follower: ${roles.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
