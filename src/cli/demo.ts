/**
 * `hadb demo`: three node processes on this machine share a temporary folder (fs storage and a
 * lease file), all write at once, and the leader is killed with SIGKILL. The terminal shows roles,
 * positions and the failover as they happen; at the end every copy is checked against every
 * acknowledged write.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Durability } from '../api-types.ts';
import { messageOf } from '../error-message.ts';
import {
  ClusterDriver,
  DEMO_TIMING,
  type Failover,
  percentile,
  type Received,
  type Verification,
} from './cluster-driver.ts';

export interface DemoOptions {
  nodes: number;
  seconds: number;
  kills: number;
  /** Writes per second per node; 0 for as fast as they are acknowledged. */
  rate: number;
  durability: Durability;
  json: boolean;
  keep: boolean;
}

export interface DemoSummary {
  ok: boolean;
  /** Kill → first write acknowledged by the new leader; the longest if there were several. */
  failoverMs: number | null;
  failoverMsList: (number | null)[];
  writesAcked: number;
  writesFailed: number;
  ackedWritesLost: number;
  followerLagMsP50: number | null;
  followerLagMsP99: number | null;
  lagSamples: number;
  durability: Durability;
  converged: boolean;
  rowCount: number;
  epochs: { epoch: number; leaders: string[] }[];
  parkedTails: number;
  nodes: number;
  kills: number;
  loadSeconds: number;
  leaseTtlMs: number;
  violations: string[];
  dir: string | null;
}

const DB = 'kv';
/** After a failover, the killed node comes back this much later and rejoins as a follower. */
const RESTART_AFTER_MS = 500;
const FAILOVER_TIMEOUT_MS = 20_000;

/** Runs the demo and returns the exit code: 0 verified, 1 an invariant failed. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-demo-'));
  const view: View = options.json
    ? silentView
    : process.stdout.isTTY
      ? new LiveView()
      : new LineView();
  const started = Date.now();
  const cluster = new ClusterDriver({
    dir,
    nodes: options.nodes,
    dbs: [DB],
    durability: options.durability,
    rate: options.rate,
    onMessage: (message) => view.message(message, started),
    onUnexpectedExit: (worker, code) =>
      view.event(started, `${worker.id} exited on its own (code ${code}); see ${dir}/logs`),
  });
  view.begin(cluster, options, dir);
  const interrupted = () => {
    view.end();
    process.stderr.write('interrupted\n');
    void cluster.close(2000).finally(() => {
      if (!options.keep) fs.rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  };
  process.once('SIGINT', interrupted);

  let summary: DemoSummary;
  try {
    view.event(started, `starting ${options.nodes} nodes`);
    await cluster.start();
    view.event(started, 'load starts on every node');
    const loadStarted = Date.now();
    cluster.startLoad();

    const failovers: Failover[] = [];
    const restarts: Promise<void>[] = [];
    const violations: string[] = [];
    const spacing = (options.seconds * 1000) / (options.kills + 1);
    for (let kill = 0; kill < options.kills; kill++) {
      await sleepUntil(loadStarted + spacing * (kill + 1));
      // The node killed last must be back first, or a kill could hit a node still starting.
      await Promise.all(restarts);
      const leader = await cluster.waitForLeader(DB);
      view.event(started, `SIGKILL ${leader.node}, the leader of epoch ${leader.epoch}`);
      const failover = await cluster.failLeader(DB, 'kill', FAILOVER_TIMEOUT_MS);
      failovers.push(failover);
      if (failover.firstAck) {
        view.event(
          started,
          `epoch ${failover.firstAck.token.epoch}: first write acknowledged ${failover.ms} ms after the kill`,
        );
      } else {
        violations.push(
          `no write was acknowledged by a new leader within ${FAILOVER_TIMEOUT_MS} ms of killing ${failover.node}`,
        );
        view.event(started, `no new leader acknowledged a write in ${FAILOVER_TIMEOUT_MS} ms`);
      }
      // In the background: a node that died leading rebuilds its copy from storage first.
      restarts.push(
        sleep(RESTART_AFTER_MS)
          .then(async () => {
            view.event(started, `restarting ${failover.node}`);
            await cluster.spawn(failover.node, { load: true });
            view.event(
              started,
              `${failover.node} is back as ${cluster.roleOf(failover.node, DB)?.role}`,
            );
          })
          .catch((error: unknown) => {
            violations.push(`${failover.node} did not come back: ${String(error)}`);
          }),
      );
    }
    await Promise.all(restarts);
    // Some load after the last restart too, so the rejoined node is seen following.
    await sleepUntil(Math.max(loadStarted + options.seconds * 1000, Date.now() + 1000));
    const loadSeconds = (Date.now() - loadStarted) / 1000;

    view.event(started, 'stopping the load; waiting for every copy to converge');
    await cluster.stopLoad();
    const { reports } = await cluster.converge();
    const verification = cluster.verify(DB, reports);
    violations.push(...verification.violations);
    summary = summarize(cluster, options, verification, failovers, violations, loadSeconds, dir);
  } catch (error) {
    view.end();
    process.off('SIGINT', interrupted);
    await cluster.close(2000);
    process.stderr.write(
      `hadb demo failed: ${messageOf(error)}\n` + `the cluster folder is kept for a look: ${dir}\n`,
    );
    return 1;
  }
  view.end();
  await cluster.close();
  process.off('SIGINT', interrupted);
  // A failed check keeps the folder: the nodes' logs and copies are the evidence.
  if (!options.keep && summary.ok) fs.rmSync(dir, { recursive: true, force: true });
  process.stdout.write(
    options.json ? `${JSON.stringify(summary)}\n` : `${formatSummary(summary, options)}\n`,
  );
  return summary.ok ? 0 : 1;
}

function summarize(
  cluster: ClusterDriver,
  options: DemoOptions,
  verification: Verification,
  failovers: Failover[],
  violations: string[],
  loadSeconds: number,
  dir: string,
): DemoSummary {
  const failoverMsList = failovers.map((failover) => failover.ms);
  const measured = failoverMsList.filter((ms): ms is number => ms !== null);
  return {
    ok: violations.length === 0,
    failoverMs: measured.length > 0 ? Math.max(...measured) : null,
    failoverMsList,
    writesAcked: verification.writesAcked,
    writesFailed: cluster.writesFailed,
    ackedWritesLost: verification.ackedWritesLost,
    followerLagMsP50: percentile(cluster.lagSamples, 50),
    followerLagMsP99: percentile(cluster.lagSamples, 99),
    lagSamples: cluster.lagSamples.length,
    durability: options.durability,
    converged: verification.converged,
    rowCount: verification.rowCount,
    epochs: verification.epochs,
    parkedTails: cluster.parked.length,
    nodes: options.nodes,
    kills: failovers.length,
    loadSeconds: Math.round(loadSeconds * 10) / 10,
    leaseTtlMs: cluster.timing.ttlMs,
    violations,
    dir: options.keep || violations.length > 0 ? dir : null,
  };
}

function formatSummary(s: DemoSummary, options: DemoOptions): string {
  const ms = (value: number | null) => (value === null ? 'n/a' : `${value} ms`);
  const lines = [
    '',
    `writes acknowledged: ${s.writesAcked} in ${s.loadSeconds} s (${s.durability}), failed: ${s.writesFailed}`,
    `acknowledged writes lost: ${s.ackedWritesLost}`,
    s.kills === 1
      ? `failover (kill → first write acknowledged by the new leader): ${ms(s.failoverMs)}`
      : `failovers (kill → first write acknowledged by the new leader): ${s.failoverMsList.map(ms).join(', ')}`,
    `follower lag (leader commit → visible on a follower), ${s.lagSamples} samples: p50 ${ms(s.followerLagMsP50)}, p99 ${ms(s.followerLagMsP99)}`,
    `copies: ${s.converged ? `all ${s.nodes} identical, ${s.rowCount} rows` : 'NOT converged'}`,
    `leaders by epoch: ${s.epochs.map(({ epoch, leaders }) => `${epoch} ${leaders.join('+')}`).join(', ')}`,
    `parked tails (commits a dead leader never shipped, set aside): ${s.parkedTails}`,
  ];
  if (s.ok) {
    lines.push(
      options.durability === 'replicated'
        ? 'verified: no acknowledged write lost, every copy identical, one leader per epoch'
        : 'verified: every copy identical, one leader per epoch (async writes may be lost by design)',
    );
  } else {
    lines.push('INVARIANTS VIOLATED:', ...s.violations.map((violation) => `  ${violation}`));
  }
  if (s.dir) lines.push(`cluster folder kept: ${s.dir} (nodes' logs in logs/)`);
  return lines.join('\n');
}

async function sleepUntil(wallMs: number): Promise<void> {
  const wait = wallMs - Date.now();
  if (wait > 0) await sleep(wait);
}

interface View {
  begin(cluster: ClusterDriver, options: DemoOptions, dir: string): void;
  message(message: Received, started: number): void;
  event(started: number, text: string): void;
  end(): void;
}

const silentView: View = {
  begin() {},
  message() {},
  event() {},
  end() {},
};

function clock(started: number): string {
  return `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`;
}

function header(options: DemoOptions, dir: string): string {
  const t = DEMO_TIMING;
  return (
    `hadb demo: ${options.nodes} node processes, fs storage and fs leases in ${dir}\n` +
    `durability ${options.durability}; lease ttl ${t.ttlMs} ms, renew every ${t.renewIntervalMs} ms, margin ${t.marginMs} ms`
  );
}

/** Plain lines, for a pipe or a log: events as they happen and a status line every 2 s. */
class LineView implements View {
  #timer: NodeJS.Timeout | undefined;

  begin(cluster: ClusterDriver, options: DemoOptions, dir: string): void {
    process.stdout.write(`${header(options, dir)}\n`);
    const started = Date.now();
    this.#timer = setInterval(() => {
      const nodes = cluster.nodeIds.map((id) => {
        const role = cluster.roleOf(id, DB);
        const status = cluster.statusOf(id, DB);
        if (!role) return `${id} down`;
        return `${id} ${role.role}${status ? ` @${status.position.epoch}:${status.position.seq}` : ''}`;
      });
      process.stdout.write(
        `${clock(started)}  acked ${cluster.writesAcked}  ${nodes.join('  ')}\n`,
      );
    }, 2000);
  }

  message(message: Received, started: number): void {
    if (message.type === 'role' && (message.role === 'leader' || message.role === 'demoting')) {
      const what = message.role === 'leader' ? 'leads' : 'steps down from';
      this.event(started, `${message.node} ${what} epoch ${message.epoch}`);
    } else if (message.type === 'parked') {
      this.event(
        started,
        `${message.node} parked an unshipped tail of epoch ${message.epoch} (${message.pages} pages)`,
      );
    }
  }

  event(started: number, text: string): void {
    process.stdout.write(`${clock(started)}  ${text}\n`);
  }

  end(): void {
    if (this.#timer) clearInterval(this.#timer);
  }
}

const ansi = {
  bold: (s: string) => `\x1b[1m${s}\x1b[22m`,
  dim: (s: string) => `\x1b[2m${s}\x1b[22m`,
  green: (s: string) => `\x1b[32m${s}\x1b[39m`,
  red: (s: string) => `\x1b[31m${s}\x1b[39m`,
};

/** A table of the nodes redrawn in place five times a second, with the latest events below. */
class LiveView implements View {
  #timer: NodeJS.Timeout | undefined;
  #drawn = 0;
  readonly #events: string[] = [];
  #cluster: ClusterDriver | undefined;
  #started = Date.now();

  begin(cluster: ClusterDriver, options: DemoOptions, dir: string): void {
    this.#cluster = cluster;
    this.#started = Date.now();
    process.stdout.write(`${header(options, dir)}\n\n`);
    this.#timer = setInterval(() => this.#draw(), 200);
  }

  message(message: Received, started: number): void {
    if (message.type === 'role' && message.role === 'leader') {
      this.event(started, `${message.node} leads epoch ${message.epoch}`);
    } else if (message.type === 'parked') {
      this.event(
        started,
        `${message.node} parked an unshipped tail of epoch ${message.epoch} (${message.pages} pages)`,
      );
    }
  }

  event(started: number, text: string): void {
    this.#events.push(`${ansi.dim(clock(started))}  ${text}`);
    if (this.#events.length > 8) this.#events.shift();
  }

  #draw(): void {
    const cluster = this.#cluster;
    if (!cluster) return;
    const rows = [
      ansi.bold(
        `${'node'.padEnd(8)} ${'pid'.padEnd(8)} ${'role'.padEnd(12)} ${'epoch'.padEnd(6)} ${'position'.padEnd(10)} ${'acked'.padStart(7)} ${'failed'.padStart(7)}`,
      ),
    ];
    for (const id of cluster.nodeIds) {
      const worker = cluster.workers.get(id);
      const role = cluster.roleOf(id, DB);
      const status = cluster.statusOf(id, DB);
      const alive = worker?.alive === true;
      const roleText = !alive ? 'killed' : (role?.role ?? 'starting');
      const paint =
        roleText === 'leader' ? ansi.green : roleText === 'killed' ? ansi.red : (s: string) => s;
      rows.push(
        [
          id.padEnd(8),
          String(alive ? (worker?.pid ?? '') : '-').padEnd(8),
          paint(roleText.padEnd(12)),
          String(role?.role === 'leader' ? role.epoch : '').padEnd(6),
          (alive && status ? `${status.position.epoch}:${status.position.seq}` : '-').padEnd(10),
          String(cluster.acksByNode.get(id) ?? 0).padStart(7),
          String(cluster.failuresByNode.get(id) ?? 0).padStart(7),
        ].join(' '),
      );
    }
    rows.push(
      '',
      `${clock(this.#started)}  writes acknowledged ${ansi.bold(String(cluster.writesAcked))}, failed ${cluster.writesFailed}`,
      '',
      ...this.#events,
    );
    const up = this.#drawn > 0 ? `\x1b[${this.#drawn}F` : '';
    process.stdout.write(`${up}\x1b[J${rows.join('\n')}\n`);
    this.#drawn = rows.length;
  }

  end(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#draw();
  }
}
