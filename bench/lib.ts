/**
 * Shared helpers for the benchmarks in this folder. Each benchmark prints progress to stderr and
 * one JSON object as the last line of stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const quick = process.argv.includes('--quick');

/** The value after `--name` on the command line, or undefined. */
export function argValue(name: string): string | undefined {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? undefined : process.argv[at + 1];
}

/** Progress and diagnostics: stderr only, so stdout ends with the JSON result. */
export function log(...parts: unknown[]): void {
  process.stderr.write(`${parts.map((p) => (typeof p === 'string' ? p : String(p))).join(' ')}\n`);
}

/** The result line: must be the last thing written to stdout. */
export function emit(result: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** Yields to the event loop so timers and I/O callbacks (the leader's shipping) get to run. */
export function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export function nowMs(): number {
  return performance.now();
}

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function round(value: number, digits = 3): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export const MB = 1024 * 1024;

export function mbPerSec(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

/** A fresh directory under the OS temp dir; removed by {@link removeDir}. */
export function makeTempDir(name: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `hadb-bench-${name}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

export function removeDatabaseFiles(file: string): void {
  for (const suffix of ['', '-wal', '-shm', '-journal', '-hadb-leader.json', '-hadb-redo']) {
    fs.rmSync(`${file}${suffix}`, { force: true });
  }
}

/** Total size in bytes of the regular files under `dir`. */
export function directoryBytes(dir: string): number {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += fs.statSync(path.join(entry.parentPath, entry.name)).size;
  }
  return total;
}

/** A field of /proc/self/status in MiB (VmHWM = peak RSS, VmRSS = current), or NaN off Linux. */
export function procStatusMb(field: 'VmHWM' | 'VmRSS'): number {
  try {
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match?.[1] === undefined ? Number.NaN : Number(match[1]) / 1024;
  } catch {
    return Number.NaN;
  }
}

/** Alternates the order of two sides per round (A B, B A, ...) to cancel drift on noisy machines. */
export function sidesForRound<T>(round: number, a: T, b: T): [T, T] {
  return round % 2 === 0 ? [a, b] : [b, a];
}

/** The `p`-th percentile (0..100), linear between the closest ranks; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  const a = sorted[low] as number;
  const b = sorted[high] as number;
  return a + (b - a) * (rank - low);
}

/** p50 / p90 / p99 / max, rounded, for reporting a latency distribution. */
export function latencySummary(values: readonly number[], digits = 3) {
  return {
    p50: round(percentile(values, 50), digits),
    p90: round(percentile(values, 90), digits),
    p99: round(percentile(values, 99), digits),
    max: round(values.length ? values.reduce((m, v) => Math.max(m, v)) : Number.NaN, digits),
    count: values.length,
  };
}

/** CPU count and 1-minute load average: other work on the machine skews latency figures. */
export function machineLoad(): { cpus: number; loadAvg1m: number } {
  return { cpus: os.availableParallelism(), loadAvg1m: round(os.loadavg()[0] as number, 2) };
}
