/** Runs the operations commands in a child process, so exit codes, stdout and stderr are real. */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { keepForFailure } from '../../support/test-output.ts';

// The real command, as a user runs it.
const entry = path.resolve(import.meta.dirname, '../../../bin/hadb.js');

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd: string;
  /** Added to the environment, which starts without any inherited `HADB_*` variable. */
  env?: Record<string, string>;
}

export function spawnHadb(args: readonly string[], options: CliOptions): ChildProcess {
  const env: Record<string, string | undefined> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith('HADB_')) env[name] = value;
  }
  const child = spawn(process.execPath, [entry, ...args], {
    cwd: options.cwd,
    env: { ...env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Shown if the test fails; a passing test prints nothing of it.
  child.stderr?.on('data', (chunk: Buffer) => {
    keepForFailure(`hadb ${args[0] ?? ''} ${child.pid}`, chunk.toString('utf8'));
  });
  return child;
}

/** Runs `hadb <args>` to completion. */
export function hadb(args: readonly string[], options: CliOptions): Promise<CliRun> {
  return watch(spawnHadb(args, options)).done;
}

export interface WatchedProcess {
  /** Resolves when the process exits, with everything it wrote. */
  done: Promise<CliRun>;
  /** The first complete stdout line, written so far or later, that `match` accepts. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
}

/** Collects a running child's output and lets a test wait for a line of it. */
export function watch(child: ChildProcess): WatchedProcess {
  let stdout = '';
  const waiters = new Set<() => void>();
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    for (const wake of waiters) wake();
  });
  const done = collectAfter(child, () => stdout);
  let exited = false;
  void done.then(() => {
    exited = true;
    for (const wake of waiters) wake();
  });
  return {
    done,
    waitForLine: (match, timeoutMs = 20_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = stdout.split('\n').slice(0, -1).find(match);
          if (found !== undefined) finish(() => resolve(found));
          else if (exited) finish(() => reject(new Error(`exited first; stdout:\n${stdout}`)));
        };
        const timer = setTimeout(
          () => finish(() => reject(new Error(`no such line in ${timeoutMs} ms:\n${stdout}`))),
          timeoutMs,
        );
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      }),
  };
}

function collectAfter(child: ChildProcess, stdout: () => string): Promise<CliRun> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: stdout(), stderr }));
  });
}
