import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import type { RacerCommand, RacerReply } from './fixtures/lease-racer.ts';

const RACERS = 16;
const ROUNDS = 10;
const KEY = 'leader';
const REPLY_TIMEOUT_MS = 20_000;
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RACER_SCRIPT = fileURLToPath(new URL('./fixtures/lease-racer.ts', import.meta.url));

/** A child process running lease-racer.ts, with its replies queued in order. */
class Racer {
  readonly child: ChildProcess;
  private readonly replies: RacerReply[] = [];
  private waiting: ((reply: RacerReply) => void) | undefined;
  private stderr = '';

  constructor(leasePath: string, id: number) {
    this.child = spawn(process.execPath, ['--import', 'tsx', RACER_SCRIPT, leasePath, String(id)], {
      cwd: REPO_ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    if (this.child.stdout === null) throw new Error('racer has no stdout');
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      const reply = JSON.parse(line) as RacerReply;
      const waiting = this.waiting;
      this.waiting = undefined;
      if (waiting) waiting(reply);
      else this.replies.push(reply);
    });
  }

  send(command: RacerCommand): void {
    this.child.stdin?.write(`${JSON.stringify(command)}\n`);
  }

  async next<T extends RacerReply['type']>(type: T): Promise<Extract<RacerReply, { type: T }>> {
    const reply =
      this.replies.shift() ??
      (await new Promise<RacerReply>((resolve, reject) => {
        const timer = setTimeout(() => {
          this.waiting = undefined;
          reject(
            new Error(`no ${type} reply within ${REPLY_TIMEOUT_MS} ms; stderr: ${this.stderr}`),
          );
        }, REPLY_TIMEOUT_MS);
        this.waiting = (received) => {
          clearTimeout(timer);
          resolve(received);
        };
      }));
    if (reply.type !== type) {
      throw new Error(
        `expected a ${type} reply, got ${JSON.stringify(reply)}; stderr: ${this.stderr}`,
      );
    }
    return reply as Extract<RacerReply, { type: T }>;
  }
}

describe('fs lease store across processes', () => {
  let root: string;
  let racers: Racer[] = [];

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-'));
  });

  afterEach(() => {
    for (const racer of racers) {
      if (racer.child.exitCode === null && racer.child.signalCode === null) racer.child.kill();
    }
    racers = [];
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** Sends `command` to every racer at once and collects one reply from each. */
  function race<T extends RacerReply['type']>(
    command: RacerCommand & { cmd: T },
  ): Promise<Extract<RacerReply, { type: T }>[]> {
    for (const racer of racers) racer.send(command);
    return Promise.all(racers.map((racer) => racer.next<T>(command.cmd as T)));
  }

  it(`lets exactly one of ${RACERS} processes win each compare-and-swap`, {
    timeout: 60_000,
  }, async () => {
    const leasePath = path.join(root, 'leases', 'leases.sqlite');
    racers = Array.from({ length: RACERS }, (_, id) => new Racer(leasePath, id));
    await Promise.all(racers.map((racer) => racer.next('ready')));

    const creates = await race({ cmd: 'create', key: KEY });
    const created = creates.filter((reply) => reply.ok);
    expect(created).toHaveLength(1);
    expect(created[0]?.revision).toBe('1');

    let lastWinner: Extract<RacerReply, { type: 'update' }> | undefined;
    for (let round = 1; round <= ROUNDS; round++) {
      const reads = await race({ cmd: 'read', key: KEY });
      // Everyone read before anyone wrote, so all compete for the same revision.
      expect(new Set(reads.map((reply) => reply.revision))).toEqual(new Set([String(round)]));

      const updates = await race({ cmd: 'update', key: KEY, round });
      const winners = updates.filter((reply) => reply.ok);
      expect(winners, `round ${round}`).toHaveLength(1);
      expect(winners[0]?.revision).toBe(String(round + 1));
      lastWinner = winners[0];
    }

    for (const racer of racers) racer.send({ cmd: 'exit' });
    await Promise.all(
      racers.map((racer) => new Promise((resolve) => racer.child.once('exit', resolve))),
    );

    const store = createFsLeaseStore({ path: leasePath });
    try {
      const entry = await store.get(KEY);
      expect(entry?.revision).toBe(String(1 + ROUNDS));
      expect(new TextDecoder().decode(entry?.value)).toBe(lastWinner?.value);
    } finally {
      await store.close();
    }
  });
});
