import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../src/cli/commands/status.ts';
import type { HadbNode } from '../../src/runtime/node.ts';
import { testClusters, waitFor } from '../integration/support/nodes.ts';
import { type CliRun, hadb } from './support/cli.ts';

const cluster = testClusters('hadb-cli-status-');
/** A working directory without hadb.json. */
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-status-cwd-'));
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

function json(run: CliRun): ClusterStatus {
  try {
    return JSON.parse(run.stdout) as ClusterStatus;
  } catch {
    throw new Error(`not JSON (exit ${run.code}):\n${run.stdout}\nstderr:\n${run.stderr}`);
  }
}

/** A localhost URL nothing listens on: a port the OS just handed out and took back. */
async function closedPortUrl(): Promise<string> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

/** Two nodes sharing `app`, one row written and replicated to both. */
async function twoNodes(): Promise<[HadbNode, HadbNode]> {
  const { start } = cluster();
  const a = await start('a');
  const dbA = await a.open('app', { schema: 'create table if not exists t(k text)' });
  const b = await start('b');
  const dbB = await b.open('app');
  await dbA.execute('insert into t(k) values (?)', ['one'], { durability: 'replicated' });
  const settled = () => {
    const [sa] = a.status().databases;
    const [sb] = b.status().databases;
    return (
      sa !== undefined &&
      sb !== undefined &&
      sa.role === 'leader' &&
      sb.role === 'follower' &&
      sb.seq === sa.seq &&
      sb.leader === 'a'
    );
  };
  await waitFor(settled, 10_000, 'b to follow a and catch up');
  expect(dbB.name).toBe('app');
  return [a, b];
}

describe('hadb status', () => {
  it('shows every node of a healthy cluster, then names an unreachable node', async () => {
    const [a, b] = await twoNodes();
    const nodes = `${a.address},${b.address}`;

    const table = await hadb(['status', '--nodes', nodes], { cwd });
    expect(table.stderr).toBe('');
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(
      /^DATABASE\s+NODE\s+ROLE\s+EPOCH\s+SEQ\s+LAG\s+LEADER\s+LEASE PROBLEM$/,
    );
    expect(lines[1]).toMatch(/^app\s+a\s+leader\s+\d+\s+\d+\s+0\s+a\s+-$/);
    expect(lines[2]).toMatch(/^app\s+b\s+follower\s+\d+\s+\d+\s+0\s+a\s+-$/);
    expect(lines.at(-1)).toMatch(/^ok: 2 node\(s\), 1 database\(s\)/);

    const run = await hadb(['status', '--json'], { cwd, env: { HADB_NODES: nodes } });
    expect(run.code).toBe(0);
    const status = json(run);
    expect(status.ok).toBe(true);
    expect(status.problems).toEqual([]);
    expect(status.nodes.map((node) => [node.url, node.ok, node.node])).toEqual([
      [a.address, true, 'a'],
      [b.address, true, 'b'],
    ]);
    expect(status.databases).toHaveLength(1);
    const [app] = status.databases;
    const seq = a.status().databases[0]?.seq;
    expect(app).toMatchObject({ name: 'app', leaderNodes: ['a'], maxSeq: seq });
    expect(app?.rows).toEqual([
      expect.objectContaining({
        node: 'a',
        url: a.address,
        role: 'leader',
        seq,
        lag: 0,
        leader: 'a',
        leaseProblem: null,
      }),
      expect.objectContaining({
        node: 'b',
        url: b.address,
        role: 'follower',
        seq,
        lag: 0,
        leader: 'a',
        leaseProblem: null,
      }),
    ]);

    const dead = await closedPortUrl();
    const partial = await hadb(['status', '--nodes', `${nodes},${dead}`, '--timeout', '1000'], {
      cwd,
    });
    expect(partial.code).toBe(1);
    expect(partial.stdout).toContain(`unreachable: ${dead}`);
    expect(partial.stdout).toMatch(/^app\s+a\s+leader/m);
    const partialJson = json(
      await hadb(['status', '--json', '--nodes', `${nodes},${dead}`, '--timeout', '1000'], { cwd }),
    );
    expect(partialJson.ok).toBe(false);
    expect(partialJson.nodes[2]).toMatchObject({ url: dead, ok: false });
    expect(partialJson.nodes[2]?.error).toEqual(expect.any(String));
    expect(partialJson.problems).toEqual([expect.stringContaining(`node ${dead} unreachable`)]);
  });

  it('exits 2 without nodes or with a bad URL', async () => {
    const [none, bad] = await Promise.all([
      hadb(['status'], { cwd }),
      hadb(['status', '--nodes', 'ftp://example.com'], { cwd }),
    ]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no nodes given');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('http://');
  });
});
