import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { describe, expect, test } from 'vitest';
import { testClusters, waitFor } from './support/nodes.ts';

// A leader whose file a statement process has open steps down cleanly: the processes close their
// connections first, so the leader's close checkpoints and removes the WAL before its file
// becomes the follower copy.

const cluster = testClusters('hadb-isolated-handoff-');

describe('isolated reads across a handoff', () => {
  test('the old leader keeps its file as a whole copy and follows the new one', async () => {
    const c = cluster();
    const warnings: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(line) });
    const a = await c.start('a', { logger });
    const onA = await a.open('db', { schema: 'create table if not exists t(v)' });
    await onA.ready({ writable: true });
    const b = await c.start('b');
    const onB = await b.open('db', { schema: 'create table if not exists t(v)' });
    for (let i = 0; i < 50; i++) await onA.execute('insert into t(v) values (?)', [`a${i}`]);
    expect(await onA.get('select count(*) as n from t', [], { isolated: true })).toEqual({ n: 50 });
    await waitFor(() => onB.role === 'follower' && onB.isCaughtUp, 10_000, 'b to follow');
    onA.handoff();
    await waitFor(() => onB.writable, 10_000, 'b to lead');
    await waitFor(() => onA.role === 'follower', 10_000, 'a to follow');
    expect(fs.existsSync(path.join(c.dir, 'nodes', 'a', 'db.db-wal'))).toBe(false);
    // Its own file became the follower copy: not rebuilt from storage for a WAL left behind.
    expect(warnings.filter((line) => line.includes('rebuilding the local copy'))).toEqual([]);
    const { token } = await onB.execute('insert into t(v) values (?)', ['b']);
    await waitFor(() => onA.position.seq >= token.seq, 10_000, 'a to apply the write of b');
    expect(await onA.get('select count(*) as n from t', [], { isolated: true })).toEqual({ n: 51 });
    expect(await onA.get('pragma integrity_check', [], { isolated: true })).toEqual({
      integrity_check: 'ok',
    });
  });
});
