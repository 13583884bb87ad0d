/**
 * The parent side of multi-process benchmarks: starts hadb nodes as child processes
 * (node-process.ts, run through tsx) sharing one temp folder (fs storage + fs lease store) and
 * talks to them over IPC.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { log, round } from '../lib.ts';
import { BENCH_TIMING, type ClusterConfig, monoMs, type TaskName, type Tasks } from './protocol.ts';

const SCRIPT = fileURLToPath(new URL('./node-process.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface NodeProcess {
  readonly id: string;
  readonly pid: number | undefined;
  call<K extends TaskName>(task: K, args: Tasks[K]['args']): Promise<Tasks[K]['value']>;
  /** Asks the node to close (releasing its lease), then waits for the process to exit. */
  stop(): Promise<void>;
  /** Kills the process (only this one, by its pid). */
  kill(): void;
}

export function clusterConfig(dir: string, db = 'bench'): ClusterConfig {
  return { dir, secret: randomBytes(24).toString('hex'), db, timing: BENCH_TIMING };
}

export function startNodeProcess(config: ClusterConfig, id: string): NodeProcess {
  const child: ChildProcess = fork(SCRIPT, [JSON.stringify({ ...config, id })], {
    cwd: REPO,
    // HADB_BENCH_CPU_PROF=<dir>: a V8 CPU profile of each node process, written when it exits.
    execArgv: [
      '--import',
      'tsx',
      ...(process.env.HADB_BENCH_CPU_PROF
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.HADB_BENCH_CPU_PROF]
        : []),
    ],
    // The child's stdout goes to our stderr: our stdout must end with the JSON result.
    stdio: ['ignore', 2, 2, 'ipc'],
    env: { ...process.env, HADB_LOG_LEVEL: process.env.HADB_LOG_LEVEL ?? 'warn' },
  });
  let nextId = 1;
  const pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exited = true;
      for (const waiter of pending.values()) {
        waiter.reject(new Error(`node ${id} exited (code ${code}, signal ${signal})`));
      }
      pending.clear();
      resolve();
    });
  });
  child.on('message', (message: { id: number; ok: boolean; value?: unknown; error?: string }) => {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.ok) waiter.resolve(message.value);
    else waiter.reject(new Error(`node ${id}: ${message.error}`));
  });
  return {
    id,
    pid: child.pid,
    call(task, args) {
      if (exited) return Promise.reject(new Error(`node ${id} has exited`));
      const requestId = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(requestId, { resolve: resolve as (value: unknown) => void, reject });
        child.send({ id: requestId, task, args });
      });
    },
    async stop() {
      if (exited) return;
      await this.call('close', {}).catch((error: unknown) => log(`closing ${id}: ${error}`));
      child.disconnect();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    },
    kill() {
      if (!exited) child.kill('SIGKILL');
    },
  };
}

/**
 * Starts `ids[0]` first and waits until it leads, then the others (followers). The schema is
 * written 'replicated' by the leader before any follower opens, so followers bootstrap with it.
 */
export async function startCluster(
  config: ClusterConfig,
  ids: string[],
  schema: string,
): Promise<{
  leader: NodeProcess;
  followers: NodeProcess[];
  all: NodeProcess[];
  leaderAddress: string | null;
}> {
  const all: NodeProcess[] = [];
  try {
    const [leaderId, ...followerIds] = ids;
    const leader = startNodeProcess(config, leaderId as string);
    all.push(leader);
    const started = monoMs();
    const { address: leaderAddress } = await leader.call('open', { schema });
    const led = await leader.call('waitRole', { role: 'leader', timeoutMs: 30_000 });
    log(`${leader.id} leads at seq ${led.position.seq} after ${round(monoMs() - started, 0)} ms`);
    const followers: NodeProcess[] = [];
    for (const id of followerIds) {
      const follower = startNodeProcess(config, id);
      all.push(follower);
      followers.push(follower);
      const opened = await follower.call('open', { schema });
      if (opened.role === 'leader') throw new Error(`${id} took the lead from ${leader.id}`);
      await follower.call('waitRole', { role: 'follower', timeoutMs: 30_000 });
      await follower.call('waitPosition', { seq: led.position.seq, timeoutMs: 30_000 });
      log(`${id} follows at seq ${(await follower.call('status', {})).position.seq}`);
    }
    return { leader, followers, all, leaderAddress };
  } catch (error) {
    for (const node of all) node.kill();
    throw error;
  }
}

export async function stopAll(nodes: NodeProcess[]): Promise<void> {
  // Followers first, so the leader's hand-over does not trigger a take-over.
  for (const node of [...nodes].reverse()) await node.stop();
}

/**
 * Checks that a child's monotonic clock is ours: the child's reading must fall inside the IPC
 * round trip that asked for it. Returns the worst offset from the round trip's midpoint, and
 * the round trip.
 */
export async function checkSharedClock(
  node: NodeProcess,
  rounds = 20,
): Promise<{ maxOffsetMs: number; medianRttMs: number; inside: boolean }> {
  let maxOffsetMs = 0;
  let inside = true;
  const rtts: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const sent = monoMs();
    const { t } = await node.call('clock', {});
    const received = monoMs();
    rtts.push(received - sent);
    if (t < sent || t > received) inside = false;
    maxOffsetMs = Math.max(maxOffsetMs, Math.abs(t - (sent + received) / 2));
  }
  rtts.sort((a, b) => a - b);
  return {
    maxOffsetMs: round(maxOffsetMs, 3),
    medianRttMs: round(rtts[Math.floor(rtts.length / 2)] as number, 3),
    inside,
  };
}
