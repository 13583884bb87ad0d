import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import type { Transition } from '../../src/api-types.ts';
import { testClusters, waitFor } from './support/nodes.ts';

const cluster = testClusters('hadb-transitions-');
const SCHEMA = 'create table if not exists t(k text primary key)';

function readLines(file: string): Transition[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Transition);
}

describe('role transitions', () => {
  test('are written as JSON lines, in order, through a handoff', async () => {
    const c = cluster();
    const fileA = path.join(c.dir, 'transitions-a.jsonl');
    const fileB = path.join(c.dir, 'transitions-b.jsonl');
    const seenByCallback: Transition[] = [];
    const a = await c.start('a', {
      transitions: { file: fileA, onTransition: (t) => seenByCallback.push(t) },
    });
    const onA = await a.open('db', { schema: SCHEMA });
    const b = await c.start('b', { transitions: { file: fileB } });
    const onB = await b.open('db', { schema: SCHEMA });
    expect(onA.role).toBe('leader');
    onA.handoff();
    await waitFor(() => onB.role === 'leader', 5000, 'b to lead');
    await waitFor(() => onA.role === 'follower', 5000, 'a to follow');

    await waitFor(() => readLines(fileA).some((t) => t.from === 'demoting'), 5000, 'a demoted');

    const linesA = readLines(fileA);
    const linesB = readLines(fileB);
    for (const line of [...linesA, ...linesB]) {
      expect(line.db).toBe('db');
      expect(Number.isNaN(Date.parse(line.at))).toBe(false);
      expect(Math.abs(Date.parse(line.at) - Date.now())).toBeLessThan(60_000);
    }
    expect(linesA.every((t) => t.node === 'a')).toBe(true);
    expect(linesB.every((t) => t.node === 'b')).toBe(true);
    // Each line starts where the one before it ended.
    for (const lines of [linesA, linesB]) {
      expect(lines[0]).toMatchObject({ from: null, to: 'bootstrapping', reason: 'opened' });
      for (let i = 1; i < lines.length; i++) expect(lines[i]?.from).toBe(lines[i - 1]?.to);
    }
    const leadership = (lines: Transition[]) =>
      lines
        .filter((t) => t.from === 'leader' || t.to === 'leader' || t.from === 'demoting')
        .map(({ from, to, epoch, reason }) => ({ from, to, epoch, reason }));
    expect(leadership(linesA)).toEqual([
      { from: 'candidate', to: 'leader', epoch: 1, reason: 'elected' },
      { from: 'leader', to: 'demoting', epoch: 1, reason: 'handoff' },
      { from: 'demoting', to: 'follower', epoch: expect.any(Number), reason: 'handoff' },
    ]);
    expect(leadership(linesB)).toEqual([
      { from: 'candidate', to: 'leader', epoch: 2, reason: 'elected' },
    ]);
    expect(linesB.at(-3)).toMatchObject({ to: 'catching-up', reason: 'lease released' });
    expect(seenByCallback).toEqual(linesA);

    // The same, most recent last, in /status.
    const status = (await (await fetch(`${b.address}/status`)).json()) as { transitions: unknown };
    expect(status.transitions).toEqual(linesB);
    expect(a.status().transitions).toEqual(linesA);
  });
});
