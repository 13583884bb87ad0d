import type { Logger } from 'pino';
import type { Role, WriteToken } from '../api-types.ts';
import { type Clock, sleep } from '../clock.ts';
import type { NodeClient } from '../http/node-client.ts';
import type { SqliteLeader } from '../replication/sqlite/leader.ts';
import { Wakeup } from '../wait.ts';
import { decodeTailResponse, type TailResponse } from '../wire/forward.ts';
import { encodeTailQuery, TAIL_PATH } from '../wire/node-protocol.ts';

/** How long the leader holds a tail request open when nothing new is durable. */
const TAIL_WAIT_MS = 20_000;

/** What the follower side of the live tail needs of its database. */
export interface TailFollowerContext {
  readonly name: string;
  readonly clock: Clock;
  readonly client: NodeClient;
  readonly pollIntervalMs: number;
  /** This node's own address, told to the leader for its cluster view. */
  readonly address: string | undefined;
  /** Aborted when the database closes. */
  readonly signal: AbortSignal;
  closed(): boolean;
  role(): Role;
  /** Where the current leader takes requests; null when none is known or it is this node. */
  leaderAddress(): string | null;
  /** A follower copy is open. */
  hasFollower(): boolean;
  /** The sequence the local copy holds. */
  seq(): number;
  /** The copy stays behind storage (reported elsewhere). */
  copyStuck(): boolean;
  /** A durable sequence was heard of. */
  noteSeq(seq: number): void;
  /** Applies what storage holds past the local copy. */
  pull(): Promise<void>;
  /** Reads the lease again now. */
  leaseChanged(): void;
  /** Resolves at the next role change, or after `timeoutMs`. */
  roleChange(timeoutMs: number): Promise<void>;
  problem(error: unknown): void;
  logger(): Logger;
}

/**
 * Learns of each new durable sequence from the leader at once (a long poll on its listener) and
 * falls back to polling storage when no leader answers. Only storage is ever applied.
 */
export async function followLiveTail(tail: TailFollowerContext): Promise<void> {
  const { clock, client, pollIntervalMs } = tail;
  const signal = tail.signal;
  while (!tail.closed()) {
    const role = tail.role();
    const address = role === 'follower' || role === 'catching-up' ? tail.leaderAddress() : null;
    if (address && tail.hasFollower()) {
      try {
        const after = tail.seq();
        const { status, body } = await client.request(
          'GET',
          // `from` tells the leader where this follower is, for its cluster view.
          `${address}${TAIL_PATH}?${encodeTailQuery({ db: tail.name, after, from: tail.address ?? null })}`,
          null,
          TAIL_WAIT_MS + 5000,
          signal,
        );
        if (status === 200) {
          const answer = decodeTailResponse(body);
          tail.noteSeq(answer.seq);
          if (answer.seq > tail.seq()) await tail.pull();
          if (!answer.leading) {
            tail.leaseChanged();
            await sleep(clock, 20);
          } else if (tail.copyStuck()) {
            // Behind storage: the leader would answer at once again; wait as a poll would.
            await Promise.race([sleep(clock, pollIntervalMs), tail.roleChange(pollIntervalMs)]);
          }
          continue;
        }
      } catch (error) {
        if (tail.closed()) return;
        tail.logger().debug({ err: error }, 'live tail unavailable; polling storage');
      }
    }
    if (tail.role() !== 'leader') await tail.pull().catch((error: unknown) => tail.problem(error));
    await Promise.race([sleep(clock, pollIntervalMs), tail.roleChange(pollIntervalMs)]);
  }
}

/** What the leader side of the live tail needs of its database. */
export interface TailLeaderContext {
  readonly clock: Clock;
  /** Aborted when the database closes. */
  readonly signal: AbortSignal;
  closed(): boolean;
  /** The leader while this node leads and may ship, else null. */
  leading(): SqliteLeader | null;
  /** The local copy's position. */
  position(): WriteToken;
}

/** The leader side of the live tail: tail requests wait here for the next shipped changeset. */
export class ShippedWaiters {
  readonly #context: TailLeaderContext;
  readonly #waiters = new Wakeup();

  constructor(context: TailLeaderContext) {
    this.#context = context;
  }

  /** Answers once a sequence above `after` is durable. */
  async waitForShipped(after: number): Promise<TailResponse> {
    const { clock, signal } = this.#context;
    const deadline = clock.now() + TAIL_WAIT_MS;
    for (;;) {
      const leader = this.#context.leading();
      if (!leader) {
        return { ...this.#context.position(), leading: false };
      }
      const position = leader.position;
      const left = deadline - clock.now();
      if (position.seq > after || left <= 0) {
        return { epoch: position.epoch, seq: position.seq, leading: true };
      }
      await this.#waiters.wait(clock, left, signal);
      if (this.#context.closed()) return { ...this.#context.position(), leading: false };
    }
  }

  /** Something shipped, or the leadership ended: the waiting requests look again. */
  wake(): void {
    this.#waiters.wake();
  }
}
