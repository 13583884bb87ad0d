import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { testClusters } from './support/nodes.ts';

const cluster = testClusters('hadb-db-failed-');

describe('a database whose actor keeps crashing', () => {
  test('is given up on: open says so at once, and the node serves its other databases', async () => {
    const c = cluster();
    // Local damage hadb cannot repair: a directory where a leader's state file would be.
    const dataDir = path.join(c.dir, 'nodes', 'a');
    fs.mkdirSync(path.join(dataDir, 'broken.db-hadb-leader.json'), { recursive: true });
    const a = await c.start('a', { logger: pino({ level: 'silent' }) });
    const healthy = await a.open('healthy', { schema: 'create table if not exists t(k)' });

    const started = Date.now();
    const refused = await a.open('broken', { timeoutMs: 30_000 }).catch((error) => error);
    expect(refused).toMatchObject({ code: 'DATABASE_FAILED', db: 'broken' });
    expect(refused.message).toContain('EISDIR');
    // The restart budget (6 crashes with backoff) ends it, not the open timeout.
    expect(Date.now() - started).toBeLessThan(15_000);

    await healthy.execute("insert into t values ('still served')");
    expect(await healthy.all('select k from t')).toEqual([{ k: 'still served' }]);
    expect(a.status().databases.map((d) => d.name)).toEqual(['healthy']);
    const metrics = await (await fetch(`${a.address}/metrics`)).text();
    expect(metrics).toContain('hadb_database_problems_total{state="failed",code="EISDIR"} 1');
    expect(metrics).not.toContain('broken');
  }, 60_000);
});
