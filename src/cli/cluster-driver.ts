/**
 * Runs a cluster of `hadb worker` processes on one machine (fs storage and fs leases in one
 * folder) and keeps what they report: acknowledged writes, role changes, parked tails, lag
 * samples. Kills, pauses and restarts nodes, measures failovers, and checks at the end that no
 * acknowledged write was lost, every copy converged and no epoch had two leaders. Shared by
 * `hadb demo`, the failover tests and the failover benchmark.
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Durability, Role, WriteToken } from '../api-types.ts';
import { ClosedError, TimeoutError } from '../errors.ts';
import type { LeaseTiming } from '../machines/role.ts';
import type { WorkerCommand, WorkerMessage } from './worker.ts';

/** Short leases, so a failover takes about two seconds instead of six. */
export const DEMO_TIMING: LeaseTiming = {
  ttlMs: 1500,
  renewIntervalMs: 300,
  retryIntervalMs: 100,
  pollIntervalMs: 250,
  marginMs: 200,
};

const BIN = fileURLToPath(new URL('../../bin/hadb.js', import.meta.url));

export type Received<T extends WorkerMessage['type'] = WorkerMessage['type']> = Extract<
  WorkerMessage,
  { type: T }
> & { receivedAt: number };

type AckMessage = Received<'ack'>;
type ReportMessage = Received<'report'>;

export interface ClusterOptions {
  /** Holds the shared storage, the lease file, one folder per node and the nodes' logs. */
  dir: string;
  nodes: number;
  dbs?: string[];
  /** Backends by URL (default: storage and a lease file in `dir`). */
  storageUrl?: string;
  leasesUrl?: string;
  timing?: LeaseTiming;
  durability?: Durability;
  /** Writes in flight per node and database. */
  concurrency?: number;
  /** Writes per second per node and database; 0 for as fast as they complete. */
  rate?: number;
  forwardTimeoutMs?: number;
  statusIntervalMs?: number;
  /** More arguments for one node's `hadb worker` (e.g. `--transitions`, `--inspect`). */
  workerArgs?: (id: string) => string[];
  onMessage?: (message: Received, worker: WorkerProcess) => void;
  /** A worker exited without being told to (it crashed). */
  onUnexpectedExit?: (worker: WorkerProcess, code: number | null) => void;
}

export class WorkerProcess {
  readonly id: string;
  /** 0 for the first run of this node, then 1, 2… after each restart. */
  readonly run: number;
  readonly child: ChildProcessByStdio<Writable, Readable, Readable>;
  readonly exited: Promise<number | null>;
  alive = true;
  paused = false;
  /** Set when the driver killed or stopped it: its exit is expected. */
  ending = false;
  /** Why it gave up, if it said so before exiting. */
  fatal: string | null = null;

  constructor(id: string, run: number, child: ChildProcessByStdio<Writable, Readable, Readable>) {
    this.id = id;
    this.run = run;
    this.child = child;
    // A killed worker's stdin is a broken pipe: commands to it are lost, which is fine.
    child.stdin.on('error', () => {});
    this.exited = new Promise((resolve) => {
      // 'close', not 'exit': every line the process wrote has been read by then.
      child.on('close', (code) => {
        this.alive = false;
        resolve(code);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  send(command: WorkerCommand): void {
    if (this.alive && this.child.stdin.writable)
      this.child.stdin.write(`${JSON.stringify(command)}\n`);
  }
}

export interface Failover {
  /** The node that led and was killed (or paused, or handed off). */
  node: string;
  epoch: number;
  /** Wall-clock ms when it happened; every worker runs on this host, so their clocks agree. */
  at: number;
  /** The first write acknowledged under a later epoch; null if none came in time. */
  firstAck: AckMessage | null;
  /** From `at` to that acknowledgement. */
  ms: number | null;
}

export interface Verification {
  db: string;
  writesAcked: number;
  /** Acknowledged writes missing from the final leader's copy. */
  ackedWritesLost: number;
  /** A few of them, to look at. */
  lostKeys: string[];
  /** Per node, acknowledged writes its copy lacks. */
  missingByNode: Record<string, number>;
  /** Every copy at the same position with the same content. */
  converged: boolean;
  positions: Record<string, WriteToken>;
  contentHashes: Record<string, string>;
  rowCount: number;
  /** Rows in the final copy whose write was not acknowledged (cut off by a kill): allowed. */
  unacknowledgedRows: number;
  /** Every epoch some node reported leading, with the nodes that did. */
  epochs: { epoch: number; leaders: string[] }[];
  violations: string[];
}

export function percentile(values: readonly number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

export class ClusterDriver {
  readonly dir: string;
  readonly dbs: string[];
  readonly timing: LeaseTiming;
  readonly durability: Durability;
  readonly workers = new Map<string, WorkerProcess>();
  readonly acks = new Map<string, Map<string, AckMessage>>();
  readonly parked: Received<'parked'>[] = [];
  readonly roleChanges: Received<'role'>[] = [];
  readonly lagSamples: number[] = [];
  writesFailed = 0;
  /** Acknowledged writes per node, over all its runs. */
  readonly acksByNode = new Map<string, number>();
  readonly failuresByNode = new Map<string, number>();
  /** Nodes that exited without being told to. */
  readonly crashes: { node: string; run: number; code: number | null; fatal: string | null }[] = [];
  readonly #options: ClusterOptions;
  readonly #secret = randomBytes(16).toString('hex');
  readonly #latestRole = new Map<string, { role: Role; epoch: number | null }>();
  readonly #latestStatus = new Map<string, Received<'status'>>();
  /** Per database and epoch, the earliest acknowledged write. */
  readonly #firstAckOfEpoch = new Map<string, Map<number, AckMessage>>();
  readonly #leadersOfEpoch = new Map<string, Map<number, Set<string>>>();
  readonly #reports: ReportMessage[] = [];
  readonly #loadStopped = new Map<string, number>();
  readonly #ready = new Map<string, number>();
  #reportId = 0;

  constructor(options: ClusterOptions) {
    this.#options = options;
    this.dir = options.dir;
    this.dbs = options.dbs ?? ['kv'];
    this.timing = options.timing ?? DEMO_TIMING;
    this.durability = options.durability ?? 'replicated';
    for (const db of this.dbs) {
      this.acks.set(db, new Map());
      this.#firstAckOfEpoch.set(db, new Map());
      this.#leadersOfEpoch.set(db, new Map());
    }
  }

  get nodeIds(): string[] {
    return Array.from({ length: this.#options.nodes }, (_, i) => `node-${i + 1}`);
  }

  get writesAcked(): number {
    let total = 0;
    for (const acks of this.acks.values()) total += acks.size;
    return total;
  }

  /** Starts every node without load and waits until each is up and every database has a leader. */
  async start(timeoutMs = 30_000): Promise<void> {
    fs.mkdirSync(path.join(this.dir, 'logs'), { recursive: true });
    await Promise.all(this.nodeIds.map((id) => this.spawn(id, { load: false }, timeoutMs)));
    for (const db of this.dbs) await this.waitForLeader(db, timeoutMs);
  }

  startLoad(): void {
    for (const worker of this.#live()) worker.send({ cmd: 'start-load' });
  }

  /** Starts one node (again) and waits for it to report ready. */
  async spawn(id: string, { load }: { load: boolean }, timeoutMs = 30_000): Promise<WorkerProcess> {
    const run = (this.workers.get(id)?.run ?? -1) + 1;
    const o = this.#options;
    const t = this.timing;
    const args = [
      BIN,
      'worker',
      '--id',
      id,
      '--cluster',
      this.dir,
      '--data',
      path.join(this.dir, 'nodes', id),
      '--db',
      ...this.dbs,
      ...(o.storageUrl ? ['--storage', o.storageUrl] : []),
      ...(o.leasesUrl ? ['--leases', o.leasesUrl] : []),
      '--ttl',
      String(t.ttlMs),
      '--renew',
      String(t.renewIntervalMs),
      '--retry',
      String(t.retryIntervalMs),
      '--poll',
      String(t.pollIntervalMs),
      '--margin',
      String(t.marginMs),
      '--durability',
      this.durability,
      '--concurrency',
      String(o.concurrency ?? 4),
      '--rate',
      String(o.rate ?? 0),
      '--forward-timeout',
      String(o.forwardTimeoutMs ?? 5000),
      '--status-interval',
      String(o.statusIntervalMs ?? 500),
      '--incarnation',
      `r${run}`,
      ...(load ? [] : ['--no-load']),
      ...(o.workerArgs?.(id) ?? []),
    ];
    const child = spawn(process.execPath, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HADB_SECRET: this.#secret },
    });
    const worker = new WorkerProcess(id, run, child);
    this.workers.set(id, worker);
    this.#ready.delete(id);
    this.#loadStopped.delete(id);
    for (const db of this.dbs) {
      this.#latestRole.delete(`${id}/${db}`);
      this.#latestStatus.delete(`${id}/${db}`);
    }
    const log = fs.createWriteStream(path.join(this.dir, 'logs', `${id}.log`), { flags: 'a' });
    log.write(`--- run ${run}, pid ${child.pid} ---\n`);
    child.stderr.pipe(log);
    let pending = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      pending += chunk;
      let newline = pending.indexOf('\n');
      while (newline >= 0) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (line.trim() !== '') this.#receive(worker, line, log);
        newline = pending.indexOf('\n');
      }
    });
    void worker.exited.then((code) => {
      if (worker.ending) return;
      this.crashes.push({ node: worker.id, run: worker.run, code, fatal: worker.fatal });
      this.#options.onUnexpectedExit?.(worker, code);
    });
    await this.until(
      () => this.#ready.has(id) || !worker.alive,
      timeoutMs,
      `${id} to start (see ${log.path})`,
    );
    if (!worker.alive) {
      throw new ClosedError(
        `${id}`,
        `exited while starting${worker.fatal ? `: ${worker.fatal}` : ''}; see ${String(log.path)}`,
      );
    }
    return worker;
  }

  #receive(worker: WorkerProcess, line: string, log: fs.WriteStream): void {
    let parsed: WorkerMessage;
    try {
      parsed = JSON.parse(line) as WorkerMessage;
    } catch {
      log.write(`stdout: ${line}\n`);
      return;
    }
    // A message from an earlier run of the node, still in the pipe, must not pass for this run's.
    if (this.workers.get(worker.id) !== worker) return;
    const message = { ...parsed, receivedAt: Date.now() } as Received;
    switch (message.type) {
      case 'ready':
        this.#ready.set(worker.id, message.at);
        break;
      case 'ack': {
        this.acks.get(message.db)?.set(message.key, message);
        this.acksByNode.set(message.node, (this.acksByNode.get(message.node) ?? 0) + 1);
        const first = this.#firstAckOfEpoch.get(message.db);
        const known = first?.get(message.token.epoch);
        if (first && (!known || known.at > message.at)) first.set(message.token.epoch, message);
        break;
      }
      case 'write-failed':
        this.writesFailed += 1;
        this.failuresByNode.set(message.node, (this.failuresByNode.get(message.node) ?? 0) + 1);
        break;
      case 'role': {
        this.roleChanges.push(message);
        this.#latestRole.set(`${message.node}/${message.db}`, {
          role: message.role,
          epoch: message.epoch,
        });
        if (message.role === 'leader' && message.epoch !== null) {
          const epochs = this.#leadersOfEpoch.get(message.db);
          const nodes = epochs?.get(message.epoch) ?? new Set<string>();
          nodes.add(message.node);
          epochs?.set(message.epoch, nodes);
        }
        break;
      }
      case 'fatal':
        worker.fatal = message.message;
        break;
      case 'parked':
        this.parked.push(message);
        break;
      case 'status':
        this.#latestStatus.set(`${message.node}/${message.db}`, message);
        break;
      case 'lag':
        for (const sample of message.samples) this.lagSamples.push(sample);
        break;
      case 'report':
        this.#reports.push(message);
        break;
      case 'load-stopped':
        this.#loadStopped.set(worker.id, message.receivedAt);
        break;
      default:
        break;
    }
    this.#options.onMessage?.(message, worker);
  }

  #live(): WorkerProcess[] {
    return [...this.workers.values()].filter((worker) => worker.alive);
  }

  /** The role a node last reported for a database, if it is running. */
  roleOf(id: string, db: string): { role: Role; epoch: number | null } | null {
    const worker = this.workers.get(id);
    if (!worker?.alive) return null;
    return this.#latestRole.get(`${id}/${db}`) ?? null;
  }

  statusOf(id: string, db: string): Received<'status'> | null {
    return this.#latestStatus.get(`${id}/${db}`) ?? null;
  }

  /** The running, unpaused node that last said it leads `db` with the highest epoch. */
  leaderOf(db: string): { node: string; epoch: number } | null {
    let best: { node: string; epoch: number } | null = null;
    for (const worker of this.#live()) {
      if (worker.paused) continue;
      const latest = this.#latestRole.get(`${worker.id}/${db}`);
      if (latest?.role !== 'leader' || latest.epoch === null) continue;
      if (!best || latest.epoch > best.epoch) best = { node: worker.id, epoch: latest.epoch };
    }
    return best;
  }

  waitForLeader(db: string, timeoutMs = 30_000): Promise<{ node: string; epoch: number }> {
    return this.until(() => this.leaderOf(db), timeoutMs, `a leader of ${db}`);
  }

  /** The earliest write acknowledged under an epoch above `epoch`, at or after `since`. */
  firstAckAfter(db: string, epoch: number, since: number): AckMessage | null {
    let first: AckMessage | null = null;
    for (const [ackEpoch, ack] of this.#firstAckOfEpoch.get(db) ?? []) {
      if (ackEpoch <= epoch || ack.at < since) continue;
      if (!first || ack.at < first.at) first = ack;
    }
    return first;
  }

  /**
   * Takes the leader of `db` away (SIGKILL, or `handoff` to ask it to step down) and measures the
   * time until a write is acknowledged under a later epoch.
   */
  async failLeader(db: string, how: 'kill' | 'handoff', timeoutMs = 20_000): Promise<Failover> {
    const leader = await this.waitForLeader(db, timeoutMs);
    const at = Date.now();
    if (how === 'kill') await this.kill(leader.node);
    else this.workers.get(leader.node)?.send({ cmd: 'handoff' });
    const firstAck = await this.until(
      () => this.firstAckAfter(db, leader.epoch, at),
      timeoutMs,
      'a write acknowledged by a new leader',
    ).catch(() => null);
    return {
      node: leader.node,
      epoch: leader.epoch,
      at,
      firstAck,
      ms: firstAck ? Math.max(0, firstAck.at - at) : null,
    };
  }

  async kill(id: string): Promise<void> {
    const worker = this.workers.get(id);
    if (!worker?.alive) return;
    worker.ending = true;
    worker.child.kill('SIGKILL');
    await worker.exited;
  }

  pause(id: string): void {
    const worker = this.workers.get(id);
    if (!worker?.alive) return;
    worker.paused = true;
    worker.child.kill('SIGSTOP');
  }

  resume(id: string): void {
    const worker = this.workers.get(id);
    if (!worker?.alive) return;
    worker.child.kill('SIGCONT');
    worker.paused = false;
  }

  /** Stops every node's load and waits until none has a write in flight. */
  async stopLoad(timeoutMs?: number): Promise<void> {
    const sentAt = Date.now();
    const live = this.#live();
    for (const worker of live) worker.send({ cmd: 'stop-load' });
    await this.until(
      () =>
        live.every((worker) => !worker.alive || (this.#loadStopped.get(worker.id) ?? 0) >= sentAt),
      timeoutMs ?? (this.#options.forwardTimeoutMs ?? 5000) + 10_000,
      'every node to stop its load',
    );
  }

  /** One report per running node and database; with `keys`, every key of each copy. */
  async reports(keys: boolean, timeoutMs = 20_000): Promise<ReportMessage[]> {
    this.#reportId += 1;
    const id = this.#reportId;
    const live = this.#live();
    for (const worker of live) worker.send({ cmd: 'report', id, keys });
    const expected = live.length * this.dbs.length;
    await this.until(
      () => this.#reports.filter((report) => report.id === id).length >= expected,
      timeoutMs,
      'reports from every node',
    );
    const answers = this.#reports.filter((report) => report.id === id);
    this.#reports.length = 0;
    return answers;
  }

  /**
   * Waits until every running node holds the same position and content for every database,
   * then returns the final reports with every key. Converged or not, the reports say where each
   * copy stands.
   */
  async converge(timeoutMs = 20_000): Promise<{ converged: boolean; reports: ReportMessage[] }> {
    const deadline = Date.now() + timeoutMs;
    let converged = false;
    while (Date.now() < deadline) {
      const reports = await this.reports(false);
      converged = this.dbs.every((db) => copiesAgree(reports.filter((report) => report.db === db)));
      if (converged) break;
      await sleep(200);
    }
    return { converged, reports: await this.reports(true) };
  }

  /** Checks the invariants for one database against the final reports (with keys). */
  verify(db: string, reports: ReportMessage[]): Verification {
    const copies = reports.filter((report) => report.db === db);
    const acked = this.acks.get(db) ?? new Map<string, AckMessage>();
    const violations: string[] = [];
    const missingByNode: Record<string, number> = {};
    const positions: Record<string, WriteToken> = {};
    const contentHashes: Record<string, string> = {};
    for (const copy of copies) {
      const keys = new Set(copy.keys ?? []);
      let missing = 0;
      for (const key of acked.keys()) if (!keys.has(key)) missing += 1;
      missingByNode[copy.node] = missing;
      positions[copy.node] = copy.position;
      contentHashes[copy.node] = copy.contentHash;
    }
    const final =
      copies.find((copy) => copy.role === 'leader') ??
      [...copies].sort((a, b) => b.position.seq - a.position.seq)[0];
    const finalKeys = new Set(final?.keys ?? []);
    const lostKeys = [...acked.keys()].filter((key) => !finalKeys.has(key));
    const converged = copiesAgree(copies);
    const epochs = [...(this.#leadersOfEpoch.get(db) ?? [])]
      .sort(([a], [b]) => a - b)
      .map(([epoch, nodes]) => ({ epoch, leaders: [...nodes].sort() }));
    if (!final) violations.push(`${db}: no node reported its copy`);
    if (lostKeys.length > 0 && this.durability === 'replicated') {
      violations.push(
        `${db}: ${lostKeys.length} acknowledged writes are missing, e.g. ${lostKeys.slice(0, 5).join(', ')}`,
      );
    }
    if (!converged) violations.push(`${db}: the copies did not converge`);
    for (const crash of this.crashes) {
      violations.push(
        `${crash.node} (run ${crash.run}) exited on its own with code ${crash.code}${crash.fatal ? `: ${crash.fatal}` : ''}`,
      );
    }
    for (const { epoch, leaders } of epochs) {
      if (leaders.length > 1)
        violations.push(`${db}: epoch ${epoch} had leaders ${leaders.join(', ')}`);
    }
    return {
      db,
      writesAcked: acked.size,
      ackedWritesLost: lostKeys.length,
      lostKeys: lostKeys.slice(0, 20),
      missingByNode,
      converged,
      positions,
      contentHashes,
      rowCount: final?.rowCount ?? 0,
      unacknowledgedRows: [...finalKeys].filter((key) => !acked.has(key)).length,
      epochs,
      violations,
    };
  }

  /** Asks every node to close gracefully, then kills whatever is left. */
  async close(timeoutMs = 10_000): Promise<void> {
    const live = this.#live();
    for (const worker of live) {
      worker.ending = true;
      if (worker.paused) this.resume(worker.id);
      worker.send({ cmd: 'exit' });
    }
    await Promise.all(
      live.map(async (worker) => {
        const exited = await Promise.race([
          worker.exited.then(() => true),
          // Unreferenced: a pending deadline must not keep the driver's process alive.
          sleep(timeoutMs, false, { ref: false }),
        ]);
        if (!exited) {
          worker.child.kill('SIGKILL');
          await worker.exited;
        }
      }),
    );
  }

  /** Resolves with the first truthy value of `check`, polled every 10 ms. */
  async until<T>(
    check: () => T | null | undefined | false,
    timeoutMs: number,
    what: string,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = check();
      if (value) return value;
      if (Date.now() >= deadline) throw new TimeoutError(`waiting for ${what}`, timeoutMs);
      await sleep(10);
    }
  }
}

/** True when there are copies and all stand at the same position with the same content. */
function copiesAgree(copies: readonly ReportMessage[]): boolean {
  const [first] = copies;
  return (
    first !== undefined &&
    copies.every(
      (copy) =>
        copy.position.seq === first.position.seq &&
        copy.position.epoch === first.position.epoch &&
        copy.contentHash === first.contentHash,
    )
  );
}
