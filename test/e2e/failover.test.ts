/**
 * Failover with real processes: three `hadb worker` nodes on fs storage and fs leases, writing
 * from every node with `durability: 'replicated'`, while the leader is killed or frozen.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ClusterDriver } from '../../src/cli/cluster-driver.ts';
import { epochInLog, keysInParkedTail } from './support/log.ts';

const DB = 'kv';
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-failover-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let running: ClusterDriver | null = null;
afterEach(async () => {
  await running?.close(3000);
  running = null;
});

function cluster(label: string, options: { rate: number; concurrency?: number }): ClusterDriver {
  running = new ClusterDriver({
    dir: path.join(root, label),
    nodes: 3,
    dbs: [DB],
    durability: 'replicated',
    forwardTimeoutMs: 3000,
    ...options,
  });
  return running;
}

describe('failover between node processes', () => {
  it('loses no acknowledged write over five SIGKILLs of the leader', {
    timeout: 60_000,
  }, async () => {
    const nodes = cluster('kills', { rate: 10 });
    await nodes.start();
    nodes.startLoad();
    await sleep(1000);
    const killedEpochs: number[] = [];
    for (let kill = 1; kill <= 5; kill++) {
      const failover = await nodes.failLeader(DB, 'kill');
      expect(
        failover.firstAck,
        `kill ${kill}: no write acknowledged by a new leader`,
      ).not.toBeNull();
      killedEpochs.push(failover.epoch);
      await sleep(200);
      await nodes.spawn(failover.node, { load: true });
    }
    await sleep(500);
    await nodes.stopLoad();
    const { converged, reports } = await nodes.converge();
    const verification = nodes.verify(DB, reports);

    expect(verification.violations).toEqual([]);
    expect(reports).toHaveLength(3);
    expect(verification.ackedWritesLost).toBe(0);
    expect(Object.values(verification.missingByNode)).toEqual([0, 0, 0]);
    expect(converged).toBe(true);
    expect(new Set(Object.values(verification.contentHashes)).size).toBe(1);
    // Six leaderships at least (the first and one per kill), each claimed by a single node.
    expect(verification.epochs.length).toBeGreaterThanOrEqual(6);
    for (const { epoch, leaders } of verification.epochs) {
      expect(leaders, `leaders of epoch ${epoch}`).toHaveLength(1);
    }
    // Writes kept being acknowledged under every leadership that followed a kill.
    const ackedEpochs = new Set(
      [...(nodes.acks.get(DB)?.values() ?? [])].map((a) => a.token.epoch),
    );
    for (const epoch of killedEpochs) {
      expect([...ackedEpochs].some((acked) => acked > epoch)).toBe(true);
    }
    expect(verification.writesAcked).toBeGreaterThan(50);
  });

  it('fences a leader frozen past its lease: it demotes, parks its tail, and no acknowledged write is lost', {
    timeout: 60_000,
  }, async () => {
    // No rate limit: the leader always has commits waiting to ship when it is frozen.
    const nodes = cluster('pause', { rate: 0, concurrency: 6 });
    await nodes.start();
    nodes.startLoad();
    await sleep(1500);
    const frozen = await nodes.waitForLeader(DB);
    const frozenAt = Date.now();
    nodes.pause(frozen.node);
    const successor = await nodes.until(
      () => {
        const leader = nodes.leaderOf(DB);
        return leader && leader.epoch > frozen.epoch ? leader : null;
      },
      15_000,
      'another node to take over',
    );
    expect(successor.node).not.toBe(frozen.node);
    // Writes go on under the new leader while the old one is still frozen.
    await nodes.until(
      () => nodes.firstAckAfter(DB, frozen.epoch, frozenAt),
      15_000,
      'a write under the new epoch',
    );
    const resumedAt = Date.now();
    nodes.resume(frozen.node);
    await nodes.until(
      () =>
        nodes.roleChanges.some(
          (change) =>
            change.node === frozen.node && change.at >= resumedAt && change.role === 'follower',
        ),
      15_000,
      'the frozen leader to demote',
    );
    await sleep(1000);
    await nodes.stopLoad();
    const { converged, reports } = await nodes.converge(30_000);
    const verification = nodes.verify(DB, reports);

    expect(verification.violations).toEqual([]);
    expect(verification.ackedWritesLost).toBe(0);
    expect(converged).toBe(true);
    expect(reports.find((report) => report.node === frozen.node)?.role).toBe('follower');
    const final = reports.find((report) => report.role === 'leader');
    const finalKeys = new Set(final?.keys ?? []);
    const acked = nodes.acks.get(DB) ?? new Map();

    // What the frozen node acknowledged once it ran again is in the log, and each token names a
    // changeset of the log written under that very epoch.
    const lateAcks = [...acked.values()].filter(
      (ack) => ack.node === frozen.node && ack.at >= resumedAt,
    );
    for (const ack of lateAcks) {
      expect(finalKeys.has(ack.key), `${ack.key}, acknowledged after SIGCONT`).toBe(true);
      expect(await epochInLog(nodes.dir, DB, ack.token.seq)).toBe(ack.token.epoch);
    }

    // Every tail set aside on disk was reported, and nothing in one was ever acknowledged
    // without also being in the log.
    const parkDir = path.join(nodes.dir, 'nodes', frozen.node, 'parked');
    const onDisk = fs.existsSync(parkDir)
      ? fs.readdirSync(parkDir).map((name) => path.join(parkDir, name))
      : [];
    const reported = nodes.parked.filter((tail) => tail.node === frozen.node);
    expect(reported.map((tail) => tail.file).sort()).toEqual(onDisk.sort());
    for (const tail of reported) {
      expect(tail.epoch).toBe(frozen.epoch);
      const keys = await keysInParkedTail(nodes.dir, DB, tail.file, path.join(root, 'parked.db'));
      const parkedOnly = keys.filter((key) => !finalKeys.has(key));
      expect(parkedOnly.filter((key) => acked.has(key))).toEqual([]);
    }
  });

  it('`hadb demo --json` verifies a failover and prints one JSON summary', {
    timeout: 60_000,
  }, async () => {
    const bin = path.resolve(import.meta.dirname, '../../bin/hadb.js');
    const child = spawn(process.execPath, [bin, 'demo', '--json', '--seconds', '5'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const summary = JSON.parse(lines[0] as string);
    expect(summary).toMatchObject({
      ok: true,
      ackedWritesLost: 0,
      durability: 'replicated',
      converged: true,
      kills: 1,
      violations: [],
    });
    expect(summary.failoverMs).toBeGreaterThan(0);
    expect(summary.failoverMs).toBeLessThan(10_000);
    expect(summary.failoverMsList).toEqual([summary.failoverMs]);
    expect(summary.writesAcked).toBeGreaterThan(0);
    expect(summary.followerLagMsP50).toBeGreaterThanOrEqual(0);
    expect(summary.followerLagMsP99).toBeGreaterThanOrEqual(summary.followerLagMsP50);
    expect(summary.epochs.length).toBeGreaterThanOrEqual(2);
  });
});
