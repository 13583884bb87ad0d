/** What the benchmark parent and its node processes (node-process.ts) say to each other. */
import type { Durability, Role, WriteToken } from '../../src/api-types.ts';

export interface ClusterConfig {
  /** Shared folder: storage/ and leases.sqlite, plus nodes/<id>/ for each node's local copies. */
  dir: string;
  secret: string;
  db: string;
  timing: {
    ttlMs: number;
    renewIntervalMs: number;
    retryIntervalMs: number;
    pollIntervalMs: number;
    marginMs: number;
  };
  /** Record every storage call with its start and end (see `storageCalls`). */
  traceStorage?: boolean;
}

export interface StorageCall {
  op: 'put' | 'putIfAbsent' | 'get' | 'list' | 'delete';
  key: string;
  start: number;
  end: number;
}

/** Short lease timing, so a cluster is up in well under a second. */
export const BENCH_TIMING: ClusterConfig['timing'] = {
  ttlMs: 2000,
  renewIntervalMs: 400,
  retryIntervalMs: 100,
  pollIntervalMs: 250,
  marginMs: 200,
};

/**
 * Milliseconds of CLOCK_MONOTONIC (`process.hrtime`). On Linux every process of the machine reads
 * the same monotonic clock, unlike `performance.now()`, whose origin is each process's start.
 */
export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export interface Tasks {
  open: {
    args: { schema: string };
    value: { role: Role; address: string | null; position: WriteToken };
  };
  /**
   * Opens `names` under node-level leases (no schema) and resolves once this node leads and can
   * commit to every one: the first node of bench/many-dbs.ts.
   */
  openMany: {
    args: { names: string[]; hibernateAfterMs: number; maxOpenDatabases: number };
    value: { leaders: number };
  };
  clock: { args: Record<string, never>; value: { t: number } };
  status: {
    args: Record<string, never>;
    value: { role: Role; position: WriteToken; isCaughtUp: boolean };
  };
  loopDelay: {
    args: { reset: boolean };
    value: { p50Ms: number; p99Ms: number; maxMs: number };
  };
  waitRole: {
    args: { role: Role; timeoutMs: number };
    value: { role: Role; position: WriteToken };
  };
  waitPosition: { args: { seq: number; timeoutMs: number }; value: { position: WriteToken } };
  writeSteady: {
    args: {
      rate: number;
      count: number;
      startN: number;
      durability: Durability;
      valueChars: number;
    };
    value: {
      n: number[];
      committedAt: number[];
      resolvedMs: number[];
      lateMs: number[];
      /** The write token's seq: the highest changeset that can hold the row. */
      tokens: number[];
    };
  };
  watch: {
    args: { fromN: number; toN: number; pollMs: number; timeoutMs: number };
    value: { n: number[]; visibleAt: number[]; positions: number[]; polls: number };
  };
  latency: {
    args: { count: number; durability: Durability; valueChars: number; keyBase: number };
    value: { ms: number[]; role: Role; position: WriteToken };
  };
  httpPing: { args: { address: string; count: number }; value: { ms: number[] } };
  storageCalls: { args: Record<string, never>; value: { calls: StorageCall[] } };
  close: { args: Record<string, never>; value: { closed: boolean } };
}

export type TaskName = keyof Tasks;
