import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allRefused, hostileCluster, leaseStoreFile, outcomes } from './support/cluster.ts';
import {
  expectCopiesMatchStorage,
  expectNodeUnharmed,
  expectWritesWork,
} from './support/expect.ts';

// Finding 2: ATTACH DATABASE through Hrana read the lease store, created files on the server
// and stayed attached on the connection for later clients.

const cluster = hostileCluster('attach');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

const attach = (file: string, alias: string) => `ATTACH DATABASE '${file}' AS ${alias}`;

describe('hostile client: ATTACH and DETACH', () => {
  it('refuses ATTACH of the lease store and of a new file in every form, leaving nothing attached', async () => {
    const leader = cluster.client(await cluster.leaderOf('app'), 'app');
    const follower = cluster.client(await cluster.followerOf('app'), 'app');
    const leases = leaseStoreFile(cluster.root);
    const created = path.join(cluster.root, 'created-by-a-client.db');
    expect(fs.existsSync(leases)).toBe(true);
    const tries = {
      'execute on the leader': () => leader.execute(attach(leases, 'l')),
      'read batch on the leader': () =>
        leader.batch([attach(leases, 'l'), 'select count(*) from l.sqlite_master'], 'read'),
      'deferred batch on the follower': () =>
        follower.batch([attach(created, 'n'), 'create table n.t(x)'], 'deferred'),
      'write batch on the follower': () =>
        follower.batch([attach(leases, 'l'), 'delete from l.sqlite_master'], 'write'),
      'executeMultiple on the leader': () =>
        leader.executeMultiple(`${attach(created, 'n')}; create table n.t(x);`),
      'interactive transaction via the follower': async () => {
        const tx = await follower.transaction('deferred');
        try {
          await tx.execute(attach(leases, 'l'));
          await tx.execute('select count(*) from l.sqlite_master');
        } finally {
          tx.close();
        }
      },
      'DETACH on the leader': () => leader.execute('DETACH DATABASE l'),
      'attach hidden after a comment': () =>
        leader.execute(`/* ; */ ${attach(leases, 'l')} -- trailing`),
    };
    const report = await cluster.underAttack(() => outcomes(tries));
    expect
      .soft(report.outcome)
      .toEqual({ ok: true, value: allRefused(tries, 'STATEMENT_REFUSED') });
    expect(fs.existsSync(created)).toBe(false);
    expectNodeUnharmed(report);
    // Nothing stayed attached for the next client on either node.
    for (const client of [leader, follower]) {
      for (const alias of ['l', 'n']) {
        await expect(client.execute(`select count(*) from ${alias}.sqlite_master`)).rejects.toThrow(
          /no such table/,
        );
      }
    }
    await expectWritesWork(cluster, 'after-attach');
  }, 90_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
