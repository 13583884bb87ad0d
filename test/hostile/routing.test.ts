import { createClient } from '@libsql/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, hostileCluster, pipeline, TOKEN } from './support/cluster.ts';
import { expectCopiesMatchStorage, expectNodeUnharmed } from './support/expect.ts';

// Finding 6: `//other/v3/pipeline`, and a client URL `http://host:port/other` without the
// trailing slash, ran against the first database (`app`): a write landed in the wrong one.
// Routing is exact: such a request reaches `other` or nothing.

const cluster = hostileCluster('routing');

beforeAll(() => cluster.start(), 60_000);
afterAll(() => cluster.dispose(), 30_000);

describe('hostile client: Hrana routing', () => {
  it('never runs a request meant for another database against the first one', async () => {
    const node = await cluster.leaderOf('app');
    const app = cluster.client(node, 'app');
    const other = cluster.client(node, 'other');
    for (const client of [app, other]) await client.execute('create table routed(how text)');
    const report = await cluster.underAttack(async () => {
      const doubleSlash = await pipeline(`${node.hrana}//other/v3/pipeline`, {
        baton: null,
        requests: [
          { type: 'execute', stmt: { sql: "insert into routed(how) values ('double slash')" } },
          { type: 'close' },
        ],
      });
      const noSlash = createClient({ url: `${node.hrana}/other`, authToken: TOKEN });
      let noSlashOutcome = 'ok';
      try {
        await noSlash.execute("insert into routed(how) values ('no trailing slash')");
      } catch (error) {
        noSlashOutcome = codeOf(error) ?? String(error);
      } finally {
        noSlash.close();
      }
      return { doubleSlash: doubleSlash.status, noSlash: noSlashOutcome };
    });
    expect.soft(report.outcome.ok).toBe(true);
    // The first database got nothing; whatever was accepted went to `other`.
    expect.soft((await app.execute('select how from routed')).rows).toEqual([]);
    const inOther = (await other.execute('select how from routed')).rows.map((row) => row.how);
    const value = report.outcome.ok ? report.outcome.value : { doubleSlash: 0, noSlash: '' };
    expect.soft(inOther.includes('double slash')).toBe(value.doubleSlash === 200);
    expect.soft(inOther.includes('no trailing slash')).toBe(value.noSlash === 'ok');
    expectNodeUnharmed(report);
  }, 60_000);

  it('leaves every copy equal to storage and verify clean', async () => {
    expectCopiesMatchStorage(await cluster.finalCheck());
  }, 90_000);
});
