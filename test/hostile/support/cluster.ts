/**
 * Two real `hadb serve` processes on loopback (fs storage, fs leases in a temp folder) for the
 * hostile-client suite and `bench/attacks.ts`: clients, a `/health` probe that runs off this
 * process's event loop, the serve processes' memory, who leads what, and the end-of-run check
 * that every copy equals storage. No vitest in here, so the bench can use it too.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { type Client, createClient } from '@libsql/client';
import Database from 'better-sqlite3';
import { createFsStorage } from '../../../src/adapters/storage/fs.ts';
import { restoreDatabase } from '../../../src/replication/restore.ts';
import { keepForFailure } from '../../support/test-output.ts';

const ENTRY = path.resolve(import.meta.dirname, '../../../bin/hadb.js');

/** 16+ characters: the minimum a node accepts once short tokens are refused. */
export const TOKEN = 'hostile-suite-client-token';
const SECRET = 'hostile-suite-cluster-secret';
export const DATABASES = ['app', 'other'] as const;

/** The longest a transaction kept busy may live; the suite keeps one alive past it. */
export const TRANSACTION_LIFETIME_MS = 6_000;

/**
 * Every `hadb serve` flag the suite passes, in one place. The statement time limit and the
 * result cap keep their defaults (5 s, 64 MiB); the transaction lifetime is shortened so the
 * suite can outlive it.
 */
export const SERVE_FLAGS: readonly string[] = [
  '--transaction-timeout',
  '2',
  '--transaction-lifetime',
  String(TRANSACTION_LIFETIME_MS / 1000),
];

/** `/health` must answer within this during every attack. */
export const HEALTH_BUDGET_MS = 500;

export interface ServeNode {
  id: string;
  child: ChildProcess;
  pid: number;
  /** Where libSQL clients connect (`http://127.0.0.1:port`). */
  hrana: string;
  /** The node's own listener: `/health`, `/status`. */
  peer: string;
  /** Everything the process wrote on stderr so far. */
  stderr(): string;
  exited: Promise<number | null>;
}

/** Spawns `hadb serve` (node directly, so signals reach it) and waits for its `listening` line. */
export async function spawnServe(options: {
  root: string;
  id: string;
  dbs: readonly string[];
  token: string;
  extraArgs?: readonly string[];
}): Promise<ServeNode> {
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('HADB_')) env[name] = value;
  }
  const child = spawn(
    process.execPath,
    [
      ENTRY,
      'serve',
      ...['--id', options.id, '--data', path.join(options.root, options.id)],
      ...['--storage', storageUrl(options.root), '--leases', leasesUrl(options.root)],
      ...['--listen', '127.0.0.1:0'],
      ...options.dbs.flatMap((db) => ['--db', db]),
      ...SERVE_FLAGS,
      ...(options.extraArgs ?? []),
    ],
    {
      cwd: options.root,
      env: { ...env, HADB_SECRET: SECRET, HADB_AUTH_TOKEN: options.token },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    keepForFailure(`hadb serve ${options.id}`, chunk.toString('utf8'));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const listening = await new Promise<{ hrana: string; peer: string } | null>((resolve) => {
    const timer = setTimeout(() => resolve(null), 30_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
      const line = stdout.split('\n').find((text) => text.includes('"listening"'));
      if (line) {
        clearTimeout(timer);
        resolve(JSON.parse(line) as { hrana: string; peer: string });
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      resolve(null);
    });
  });
  if (listening === null) {
    child.kill('SIGKILL');
    throw new ServeDidNotStart(child.exitCode, stderr);
  }
  return {
    id: options.id,
    child,
    pid: child.pid as number,
    hrana: listening.hrana,
    peer: listening.peer,
    stderr: () => stderr,
    exited,
  };
}

export class ServeDidNotStart extends Error {
  readonly exitCode: number | null;
  readonly stderr: string;
  constructor(exitCode: number | null, stderr: string) {
    super(`hadb serve did not start (exit ${exitCode}): ${stderr.trim()}`);
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export function storageUrl(root: string): string {
  return pathToFileURL(path.join(root, 'storage')).href;
}

export function leasesUrl(root: string): string {
  return pathToFileURL(path.join(root, 'leases')).href;
}

/** The fs lease store's SQLite file. */
export function leaseStoreFile(root: string): string {
  return path.join(root, 'leases', 'leases.sqlite');
}

/** SIGTERM, then SIGKILL if the node is still there after `graceMs` (a stalled node). */
export async function stopServe(node: ServeNode, graceMs = 10_000): Promise<void> {
  if (node.child.exitCode !== null || node.child.signalCode !== null) return;
  node.child.kill('SIGTERM');
  const timer = setTimeout(() => node.child.kill('SIGKILL'), graceMs);
  await node.exited;
  clearTimeout(timer);
}

// ---- who leads what ----------------------------------------------------------------------------

interface StatusBody {
  node: string;
  databases: { name: string; role: string; epoch: number; leader: string | null }[];
  transitions: { db: string; node: string; from: string | null; to: string; at: string }[];
}

export async function statusOf(node: ServeNode, timeoutMs = 3000): Promise<StatusBody> {
  const response = await fetch(`${node.peer}/status`, { signal: AbortSignal.timeout(timeoutMs) });
  return (await response.json()) as StatusBody;
}

/** For each database, the node that leads it and its epoch, once all nodes agree. */
export type Leadership = Record<string, { node: string; epoch: number }>;

// ---- the cluster -------------------------------------------------------------------------------

export interface AttackReport<T> {
  /** What the attack returned, or the error it threw. */
  outcome: { ok: true; value: T } | { ok: false; error: unknown };
  /** `/health` latencies (ms) of every node, polled throughout the attack. */
  health: number[];
  /** Peak resident memory (MiB) of each serve process and its children during the attack. */
  peakRssMb: Record<string, number>;
  /** Resident memory (MiB) of each serve process before and 1.5 s after the attack. */
  rssBeforeMb: Record<string, number>;
  rssAfterMb: Record<string, number>;
  /** Each serve process's own peak resident memory (VmHWM, MiB) before and after the attack. */
  hwmBeforeMb: Record<string, number>;
  hwmAfterMb: Record<string, number>;
  leadershipBefore: Leadership;
  /** Null when the nodes no longer agree on one leader per database. */
  leadershipAfter: Leadership | null;
  /** Role transitions any node made between the start of the attack and the check after it. */
  transitionsDuring: string[];
}

export interface HostileCluster {
  root: string;
  nodes: ServeNode[];
  /** Starts the two nodes and waits until each database has one agreed leader. */
  start(): Promise<void>;
  leadership(timeoutMs?: number): Promise<Leadership>;
  leaderOf(db: string): Promise<ServeNode>;
  followerOf(db: string): Promise<ServeNode>;
  /** A client of `db` on `node` (URL with the trailing slash), closed by {@link dispose}. */
  client(node: ServeNode, db: string): Client;
  /** Runs `attack` while probing `/health` and memory; then checks who leads. */
  underAttack<T>(attack: () => Promise<T>): Promise<AttackReport<T>>;
  /** Stops the nodes, then compares every copy with storage and runs `hadb verify`. */
  finalCheck(): Promise<FinalCheck>;
  dispose(): Promise<void>;
}

export interface FinalCheck {
  /** `hadb verify <db> --json`, per database: exit code, its `ok`, and what it printed. */
  verify: Record<string, { code: number | null; ok: boolean; output: string }>;
  /** Per database and node: `integrity_check` of the copy and whether it equals storage. */
  copies: Record<string, Record<string, { integrity: string; equalsStorage: boolean }>>;
}

/** `extraArgs`: serve flags for this cluster only, after {@link SERVE_FLAGS} (the last one wins). */
export function hostileCluster(name: string, extraArgs: readonly string[] = []): HostileCluster {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), `hadb-hostile-${name}-`));
  const nodes: ServeNode[] = [];
  const clients: Client[] = [];

  async function leadership(timeoutMs = 15_000): Promise<Leadership> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      try {
        const statuses = await Promise.all(nodes.map((node) => statusOf(node)));
        const found: Leadership = {};
        for (const db of DATABASES) {
          const leaders = statuses.filter(
            (status) => status.databases.find((entry) => entry.name === db)?.role === 'leader',
          );
          const agreed = statuses.every(
            (status) =>
              status.databases.find((entry) => entry.name === db)?.leader === leaders[0]?.node,
          );
          const epoch = leaders[0]?.databases.find((entry) => entry.name === db)?.epoch;
          if (leaders.length === 1 && agreed && epoch !== undefined) {
            found[db] = { node: leaders[0]?.node as string, epoch };
          }
        }
        if (Object.keys(found).length === DATABASES.length) return found;
        last = JSON.stringify(found);
      } catch (error) {
        last = String(error);
      }
      if (Date.now() > deadline) throw new Error(`no agreed leader per database: ${last}`);
      await sleep(100);
    }
  }

  async function nodeLeading(db: string, leads: boolean): Promise<ServeNode> {
    const who = (await leadership())[db]?.node;
    const node = nodes.find((candidate) => (candidate.id === who) === leads);
    if (!node) throw new Error(`no node ${leads ? 'leads' : 'follows'} ${db}`);
    return node;
  }

  return {
    root,
    nodes,
    async start() {
      const started = await Promise.all(
        ['a', 'b'].map((id) => spawnServe({ root, id, dbs: DATABASES, token: TOKEN, extraArgs })),
      );
      nodes.push(...started);
      await leadership(30_000);
    },
    leadership,
    leaderOf: (db) => nodeLeading(db, true),
    followerOf: (db) => nodeLeading(db, false),
    client(node, db) {
      const opened = createClient({ url: `${node.hrana}/${db}/`, authToken: TOKEN });
      clients.push(opened);
      return opened;
    },
    async underAttack(attack) {
      const leadershipBefore = await leadership();
      const since = new Date().toISOString();
      const rssBeforeMb = Object.fromEntries(nodes.map((node) => [node.id, rssMb(node.pid)]));
      const hwmBeforeMb = Object.fromEntries(
        nodes.map((node) => [node.id, procStatusMb(node.pid, 'VmHWM')]),
      );
      const probe = startHealthProbe(nodes.map((node) => node.peer));
      const memory = startMemoryProbe(nodes);
      let outcome: AttackReport<unknown>['outcome'];
      try {
        outcome = { ok: true, value: await attack() };
      } catch (error) {
        outcome = { ok: false, error };
      }
      // A node stalled past its lease notices at its next renewal: give it that long.
      await sleep(1500);
      const rssAfterMb = Object.fromEntries(nodes.map((node) => [node.id, rssMb(node.pid)]));
      const hwmAfterMb = Object.fromEntries(
        nodes.map((node) => [node.id, procStatusMb(node.pid, 'VmHWM')]),
      );
      const health = await probe.stop();
      const peakRssMb = memory.stop();
      let leadershipAfter: Leadership | null = null;
      try {
        leadershipAfter = await leadership(10_000);
      } catch {}
      const transitionsDuring: string[] = [];
      for (const node of nodes) {
        try {
          for (const t of (await statusOf(node)).transitions) {
            if (t.at >= since) transitionsDuring.push(`${t.node} ${t.db}: ${t.from} -> ${t.to}`);
          }
        } catch (error) {
          transitionsDuring.push(`${node.id}: /status did not answer (${String(error)})`);
        }
      }
      return {
        outcome: outcome as AttackReport<never>['outcome'],
        health,
        peakRssMb,
        rssBeforeMb,
        rssAfterMb,
        hwmBeforeMb,
        hwmAfterMb,
        leadershipBefore,
        leadershipAfter,
        transitionsDuring,
      };
    },
    async finalCheck() {
      for (const client of clients.splice(0)) client.close();
      await Promise.all(nodes.map((node) => stopServe(node)));
      const verify: FinalCheck['verify'] = {};
      const copies: FinalCheck['copies'] = {};
      await Promise.all(
        DATABASES.map(async (db) => {
          const restored = path.join(root, `restored-${db}.db`);
          // Restored in this process (no second CLI start); `verify` runs as the real command.
          const [checked] = await Promise.all([
            runHadb(['verify', db, '--storage', storageUrl(root), '--json'], root),
            restoreDatabase({
              storage: createFsStorage({ root: path.join(root, 'storage') }),
              prefix: '',
              db,
              destPath: restored,
              overwrite: true,
            }),
          ]);
          let ok = false;
          try {
            ok = (JSON.parse(checked.stdout.trim().split('\n').at(-1) ?? '') as { ok: boolean }).ok;
          } catch {}
          const output = `${checked.stdout}${checked.stderr}`.trim();
          verify[db] = { code: checked.code, ok, output };
          const wanted = contentOrProblem(restored);
          const byNode: Record<string, { integrity: string; equalsStorage: boolean }> = {};
          for (const node of nodes) {
            const file = path.join(root, node.id, `${db}.db`);
            let integrity: string;
            let equalsStorage = false;
            try {
              integrity = integrityOf(file);
              equalsStorage = contentOrProblem(file) === wanted && !wanted.startsWith('unreadable');
            } catch (error) {
              integrity = `unreadable: ${error instanceof Error ? error.message : String(error)}`;
            }
            byNode[node.id] = { integrity, equalsStorage };
          }
          copies[db] = byNode;
        }),
      );
      return { verify, copies };
    },
    async dispose() {
      for (const client of clients.splice(0)) client.close();
      await Promise.all(nodes.map((node) => stopServe(node, 3000)));
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

function integrityOf(file: string): string {
  const database = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return (database.pragma('integrity_check') as { integrity_check: string }[])
      .map((row) => row.integrity_check)
      .join('; ');
  } finally {
    database.close();
  }
}

function contentOrProblem(file: string): string {
  try {
    return contentOf(file);
  } catch (error) {
    return `unreadable: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/** Schema and every row of every table, as one string (blobs in hex). */
function contentOf(file: string): string {
  const database = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const tables = database
      .prepare("select name, sql from sqlite_master where type = 'table' order by name")
      .all() as { name: string; sql: string }[];
    const parts = [JSON.stringify(tables)];
    for (const { name } of tables) {
      const rows = database
        .prepare(`select * from "${name.replaceAll('"', '""')}" order by 1`)
        .raw();
      for (const row of rows.iterate() as Iterable<unknown[]>) {
        parts.push(
          JSON.stringify(row, (_, value) =>
            Buffer.isBuffer(value)
              ? `x'${value.toString('hex')}'`
              : typeof value === 'bigint'
                ? String(value)
                : value,
          ),
        );
      }
    }
    return parts.join('\n');
  } finally {
    database.close();
  }
}

export function runHadb(
  args: readonly string[],
  cwd: string,
  env: Record<string, string> = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const clean: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('HADB_')) clean[name] = value;
  }
  const child = spawn(process.execPath, [ENTRY, ...args], {
    cwd,
    env: { ...clean, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

// ---- probes ------------------------------------------------------------------------------------

/**
 * Polls `GET /health` of each address back to back, in a worker thread so that this process
 * building or parsing big requests does not count as the node's latency. A request that gets no
 * answer counts as the time it waited (up to 10 s).
 */
function startHealthProbe(addresses: readonly string[]): { stop(): Promise<number[]> } {
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads');
    const latencies = [];
    let running = true;
    parentPort.on('message', () => { running = false; });
    async function poll(address) {
      while (running) {
        const started = performance.now();
        try {
          const response = await fetch(address + '/health', { signal: AbortSignal.timeout(10000) });
          await response.arrayBuffer();
        } catch {}
        latencies.push(performance.now() - started);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    Promise.all(workerData.map(poll)).then(() => parentPort.postMessage(latencies));
    `,
    { eval: true, workerData: addresses },
  );
  const result = new Promise<number[]>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    async stop() {
      worker.postMessage('stop');
      const latencies = await result;
      await worker.terminate();
      return latencies;
    },
  };
}

/** Peak of resident memory (serve process plus its children, MiB), sampled every 100 ms. */
function startMemoryProbe(nodes: readonly ServeNode[]): { stop(): Record<string, number> } {
  const peaks: Record<string, number> = {};
  const sample = () => {
    for (const node of nodes) {
      peaks[node.id] = Math.max(peaks[node.id] ?? 0, treeRssMb(node.pid));
    }
  };
  sample();
  const timer = setInterval(sample, 100);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peaks;
    },
  };
}

/** A field of /proc/<pid>/status in MiB (VmRSS now, VmHWM the peak so far); 0 once gone. */
export function procStatusMb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return match ? Number(match[1]) / 1024 : 0;
  } catch {
    return 0;
  }
}

export function rssMb(pid: number): number {
  return procStatusMb(pid, 'VmRSS');
}

/** Resident memory of a process and all its descendants (child-process statement runners). */
function treeRssMb(pid: number): number {
  let total = procStatusMb(pid, 'VmRSS');
  for (const child of childrenOf(pid)) total += treeRssMb(child);
  return total;
}

function childrenOf(pid: number): number[] {
  const found: number[] = [];
  try {
    for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
      const text = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) found.push(...text.split(/\s+/).map(Number));
    }
  } catch {}
  return found;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The error code an attack got (LibsqlError `.code`), or null. */
export function codeOf(error: unknown): string | null {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : null;
}

/** A latency percentile (ms) of `values`, `p` in [0, 100]. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const at = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[at] as number;
}

/**
 * Runs each try in turn; for each, `ok` or the error code it got (`error: message` when the
 * error has no code), so one assertion shows every form of an attack at once.
 */
export async function outcomes(
  tries: Record<string, () => Promise<unknown>>,
): Promise<Record<string, string>> {
  const found: Record<string, string> = {};
  for (const [name, attempt] of Object.entries(tries)) {
    try {
      await attempt();
      found[name] = 'ok';
    } catch (error) {
      found[name] = codeOf(error) ?? `error: ${error instanceof Error ? error.message : error}`;
    }
  }
  return found;
}

/** `tries` with every value set to `code`: what {@link outcomes} returns when all are refused. */
export function allRefused(tries: Record<string, unknown>, code: string): Record<string, string> {
  return Object.fromEntries(Object.keys(tries).map((name) => [name, code]));
}

/**
 * Write load: `rows` rows of 4 KB into `load` (created if missing), from four writers at once in
 * batches of five, so commits, captures, flushes and checkpoints all run; over 4 MB of WAL
 * reaches the leader's checkpoint threshold.
 */
export async function writeLoad(client: Client, rows: number): Promise<void> {
  await client.execute('create table if not exists load(id integer primary key, v blob)');
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let i = 0; i < rows / 4 / 5; i++) {
        await client.batch(
          Array.from({ length: 5 }, () => 'insert into load(v) values (randomblob(4000))'),
          'write',
        );
      }
    }),
  );
}

/**
 * Sends `GET <url>` with a body of `body` (fetch refuses bodies on GET); resolves with the
 * status, or with the socket error when the server answered and closed before taking it all.
 */
export function getWithBody(url: string, body: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const request = http.request(url, {
      method: 'GET',
      headers: { 'content-length': body.length, 'content-type': 'application/octet-stream' },
    });
    request.setTimeout(60_000, () => request.destroy(new Error('timed out')));
    request.on('response', (response) => {
      response.resume();
      response.on('end', () => resolve(String(response.statusCode)));
      response.on('error', () => resolve(String(response.statusCode)));
    });
    request.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
    request.end(body);
  });
}

/** A raw Hrana pipeline request; the HTTP status and the parsed body. */
export async function pipeline(
  url: string,
  body: { baton: string | null; requests: unknown[] },
  timeoutMs = 60_000,
): Promise<{ status: number; body: HranaAnswer }> {
  const response = await fetch(url, {
    signal: AbortSignal.timeout(timeoutMs),
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  let parsed: HranaAnswer;
  try {
    parsed = JSON.parse(text) as HranaAnswer;
  } catch {
    parsed = { message: text };
  }
  return { status: response.status, body: parsed };
}

export interface HranaAnswer {
  baton?: string | null;
  results?: { type: 'ok' | 'error'; error?: { code?: string | null; message: string } }[];
  message?: string;
  code?: string | null;
}

/** `ok`, or the first error code of a pipeline answer (HTTP-level or in a result). */
export function pipelineOutcome(answer: { status: number; body: HranaAnswer }): string {
  if (answer.status !== 200) return answer.body.code ?? `HTTP ${answer.status}`;
  const failed = answer.body.results?.find((result) => result.type === 'error');
  return failed ? (failed.error?.code ?? `error: ${failed.error?.message}`) : 'ok';
}
