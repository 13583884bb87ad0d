import { describe, expect, test } from 'vitest';
import { freePort, startRelay } from '../support/relay.ts';
import { counting } from './support/counted-cluster.ts';
import { FAST_TIMING, memoryNodes, waitFor } from './support/nodes.ts';
import { tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-node-tail-takeover-');
const SCHEMA = 'create table if not exists t(k text primary key)';

describe('takeover of a copy the node tail told is at the tip', () => {
  test('a copy opened after the leader node answered takes over without listing storage', async () => {
    const c = memoryNodes(freshDir('nodes'), { leaseScope: 'node' });
    // Other nodes reach a through a relay: freezing it makes a vanish without a word, as a
    // killed process does (a node that is only cut off from leases still tells its peers).
    const port = await freePort();
    const relay = await startRelay({ host: '127.0.0.1', port });
    try {
      const a = await c.start('a', {
        listen: { host: '127.0.0.1', port },
        advertise: `http://127.0.0.1:${relay.port}`,
      });
      const early = await a.open('early', { schema: SCHEMA });
      const late = await a.open('late', { schema: SCHEMA });
      await late.execute('insert into t values (?)', ['before b']);
      const counted = counting(c.storage.forNode('b'));
      const b = await c.start('b', { storage: counted.storage });

      // b tails a once a copy follows it; a's first answer also tells of 'late', not open yet.
      const earlyOnB = await b.open('early');
      await early.execute('insert into t values (?)', ['through the tail']);
      await waitFor(
        async () => (await earlyOnB.all('select k from t')).length === 1,
        2000,
        'the tail to bring the row',
      );
      const lateOnB = await b.open('late');
      const leaderOfLate = () => b.status().databases.find(({ name }) => name === 'late')?.leader;
      await waitFor(() => leaderOfLate() === 'a', 2000, 'b to know the leader of late');
      expect(await lateOnB.all('select k from t')).toEqual([{ k: 'before b' }]);

      const before = counted.requests.length;
      relay.freeze();
      c.leases.faults.cutOff('a');
      await waitFor(() => lateOnB.writable, FAST_TIMING.ttlMs * 4, 'b to lead late');
      const takeover = counted.requests.slice(before).filter(({ key }) => key.includes('late/'));
      // No listing: the node tail said the copy holds the newest change, so the epoch-start
      // record goes straight into the next slot.
      expect(takeover.map(({ op }) => op)).toEqual(['putIfAbsent']);
      await lateOnB.execute('insert into t values (?)', ['after takeover']);
      expect(await lateOnB.all('select k from t order by k')).toEqual([
        { k: 'after takeover' },
        { k: 'before b' },
      ]);
    } finally {
      relay.cut();
      await c.closeAll();
    }
  });
});
