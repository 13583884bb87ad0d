/** Starts `hadb serve` processes on a shared folder (fs storage, fs leases) and finds leaders. */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnHadb, type WatchedProcess, watch } from './cli.ts';

export interface ServedNode {
  id: string;
  child: ChildProcess;
  watched: WatchedProcess;
  /** Where libSQL clients connect. */
  hrana: string;
  /** The node's own listener (`/status`). */
  peer: string;
}

export interface ServeCluster {
  root: string;
  token: string;
  nodes: ServedNode[];
  start(id: string, extraArgs?: readonly string[]): Promise<ServedNode>;
  /** The node that leads `db` and the others, once every live node agrees on one leader. */
  roles(db: string, timeoutMs?: number): Promise<{ leader: ServedNode; followers: ServedNode[] }>;
  stop(): Promise<void>;
}

export function serveCluster(root: string, args: readonly string[]): ServeCluster {
  const token = 'client-token-for-the-test';
  const storageUrl = pathToFileURL(path.join(root, 'storage')).href;
  const leasesUrl = pathToFileURL(path.join(root, 'leases')).href;
  const nodes: ServedNode[] = [];
  const live = () => nodes.filter((node) => node.child.exitCode === null && !node.child.killed);

  async function roleOn(node: ServedNode, db: string): Promise<string | undefined> {
    try {
      const response = await fetch(`${node.peer}/status`, { signal: AbortSignal.timeout(2000) });
      const status = (await response.json()) as { databases: { name: string; role: string }[] };
      return status.databases.find((database) => database.name === db)?.role;
    } catch {
      return undefined;
    }
  }

  return {
    root,
    token,
    nodes,
    async start(id, extraArgs = []) {
      const child = spawnHadb(
        [
          'serve',
          ...['--id', id, '--data', path.join(root, id)],
          ...['--storage', storageUrl, '--leases', leasesUrl],
          ...['--listen', '127.0.0.1:0'],
          ...args,
          ...extraArgs,
        ],
        {
          cwd: root,
          env: { HADB_SECRET: 'a-cluster-secret-of-the-test', HADB_AUTH_TOKEN: token },
        },
      );
      const watched = watch(child);
      const line = await watched.waitForLine((text) => text.includes('"listening"'), 30_000);
      const { hrana, peer } = JSON.parse(line) as { hrana: string; peer: string };
      const node = { id, child, watched, hrana, peer };
      nodes.push(node);
      return node;
    },
    async roles(db, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const candidates = live();
        const roles = await Promise.all(candidates.map((node) => roleOn(node, db)));
        const leaders = candidates.filter((_, i) => roles[i] === 'leader');
        const followers = candidates.filter((_, i) => roles[i] === 'follower');
        const [leader] = leaders;
        if (leader && leaders.length === 1 && followers.length === candidates.length - 1) {
          return { leader, followers };
        }
        if (Date.now() > deadline)
          throw new Error(`no single leader of ${db}: ${roles.join(', ')}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async stop() {
      await Promise.all(
        nodes.map(async ({ child, watched }) => {
          if (child.exitCode === null && !child.killed) child.kill('SIGTERM');
          await watched.done;
        }),
      );
    },
  };
}
