import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.ts';
import type { NodeClient } from '../../src/http/node-client.ts';
import { NodeTailFollower, type TailedDatabase } from '../../src/runtime/node-tail.ts';
import { encodeMessage, type NodeTailChange } from '../../src/wire/forward.ts';

const LEADER = 'http://leader-node';

/** A leader node whose first answer tells of two databases; later requests wait until aborted. */
function leaderNode() {
  let answered = false;
  let requests = 0;
  const client = {
    request: (
      _method: string,
      _url: string,
      _body: unknown,
      _timeout: number,
      signal?: AbortSignal,
    ) => {
      requests += 1;
      if (!answered) {
        answered = true;
        const changes: NodeTailChange[] = [
          { db: 'open', epoch: 1, seq: 4, leading: true },
          { db: 'later', epoch: 1, seq: 9, leading: true },
        ];
        return Promise.resolve({
          status: 200,
          body: Buffer.from(encodeMessage({ session: 's1', cursor: 2, changes })),
        });
      }
      return new Promise<never>((_resolve, reject) => {
        signal?.addEventListener('abort', () => reject(new Error('closed')), { once: true });
      });
    },
  } as unknown as NodeClient;
  return { client, requests: () => requests };
}

function copy(name: string, following: string | null) {
  const told: NodeTailChange[] = [];
  const database: TailedDatabase = {
    name,
    followedAddress: following,
    following: following !== null,
    applyTail: async (change) => {
      told.push(change);
    },
    pullFromStorage: async () => {},
  };
  return { database, told };
}

/**
 * The follower side with one copy, `open`, following the leader node, which answered before any
 * other copy opened. No storage polling in a test's time.
 */
function tailingOneCopy() {
  const node = leaderNode();
  const open = copy('open', LEADER);
  const databases = new Map<string, TailedDatabase>([['open', open.database]]);
  const follower = new NodeTailFollower({
    client: node.client,
    clock: systemClock,
    logger: pino({ level: 'silent' }),
    self: () => undefined,
    databases: () => databases.values(),
    lookup: (name) => databases.get(name),
    intervalMs: 60_000,
  });
  return { node, open, databases, follower };
}

describe('the node tail follower', () => {
  it('tells a copy opened after the leader node answered what that answer said of it', async () => {
    const { node, open, databases, follower } = tailingOneCopy();
    try {
      follower.reconcile(open.database);
      await expect.poll(() => open.told).toEqual([{ db: 'open', epoch: 1, seq: 4, leading: true }]);

      // Opened afterwards: the leader node will not repeat itself, so the held change is told.
      const later = copy('later', LEADER);
      databases.set('later', later.database);
      follower.reconcile(later.database);
      await expect
        .poll(() => later.told)
        .toEqual([{ db: 'later', epoch: 1, seq: 9, leading: true }]);
      expect(node.requests()).toBe(2);

      // Told once: a copy that opens again hears of it from the next change, not from this one.
      follower.reconcile(later.database);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(later.told).toHaveLength(1);
    } finally {
      follower.close();
    }
  });

  it('does not tell a copy a change heard from a node it does not follow', async () => {
    const { open, databases, follower } = tailingOneCopy();
    try {
      follower.reconcile(open.database);
      await expect.poll(() => open.told).toHaveLength(1);
      const elsewhere = copy('later', 'http://another-node');
      databases.set('later', elsewhere.database);
      follower.reconcile(elsewhere.database);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(elsewhere.told).toEqual([]);
    } finally {
      follower.close();
    }
  });
});
