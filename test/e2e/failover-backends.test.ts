/**
 * The process-level failover proof on the real backends: three `hadb worker` nodes on S3 storage
 * (the emulator) with S3 leases, and with NATS leases, writing in 'replicated' mode while the
 * leader is SIGKILLed.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, expect, it } from 'vitest';
import { ClusterDriver } from '../../src/cli/cluster-driver.ts';
import { createTestBucket, type TestBucket } from '../support/s3.ts';
import { describeWithService, findService } from '../support/services.ts';

const DB = 'kv';
const KILLS = 2;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-failover-backends-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let running: ClusterDriver | null = null;
let bucket: TestBucket | null = null;
afterEach(async () => {
  await running?.close(3000);
  running = null;
  await bucket?.remove();
  bucket = null;
});

function s3Url(endpoint: string, name: string, prefix: string): string {
  const query = new URLSearchParams({ endpoint, region: 'us-east-1', forcePathStyle: 'true' });
  return `s3://${name}/${prefix}?${query}`;
}

async function killLeaderRepeatedly(label: string, leasesUrl: (bucket: string) => string) {
  const endpoint = (await findService('s3')) as string;
  bucket = await createTestBucket(endpoint);
  running = new ClusterDriver({
    dir: path.join(root, label),
    nodes: 3,
    dbs: [DB],
    durability: 'replicated',
    forwardTimeoutMs: 3000,
    rate: 10,
    storageUrl: s3Url(endpoint, bucket.name, 'data'),
    leasesUrl: leasesUrl(bucket.name),
  });
  const nodes = running;
  await nodes.start();
  nodes.startLoad();
  await sleep(1000);
  for (let kill = 1; kill <= KILLS; kill++) {
    const failover = await nodes.failLeader(DB, 'kill');
    expect(failover.firstAck, `kill ${kill}: no write acknowledged by a new leader`).not.toBeNull();
    await sleep(200);
    await nodes.spawn(failover.node, { load: true });
  }
  await sleep(500);
  await nodes.stopLoad();
  const { converged, reports } = await nodes.converge();
  const verification = nodes.verify(DB, reports);
  expect(verification.violations).toEqual([]);
  expect(verification.ackedWritesLost).toBe(0);
  expect(converged).toBe(true);
  expect(new Set(Object.values(verification.contentHashes)).size).toBe(1);
  for (const { epoch, leaders } of verification.epochs) {
    expect(leaders, `leaders of epoch ${epoch}`).toHaveLength(1);
  }
  expect(verification.epochs.length).toBeGreaterThanOrEqual(KILLS + 1);
  expect(verification.writesAcked).toBeGreaterThan(20);
}

await describeWithService('s3', 'failover on S3 storage with S3 leases', (endpoint) => {
  it('loses no acknowledged write over two SIGKILLs of the leader', { timeout: 90_000 }, () =>
    killLeaderRepeatedly('s3-s3', (name) => s3Url(endpoint, name, 'leases')),
  );
});

const natsUrl = await findService('nats');
await describeWithService('s3', 'failover on S3 storage with NATS leases', () => {
  it('loses no acknowledged write over two SIGKILLs of the leader', { timeout: 90_000 }, () => {
    if (!natsUrl) throw new Error('NATS is not reachable; start it with `scripts/services up`');
    const { host } = new URL(natsUrl);
    return killLeaderRepeatedly(
      's3-nats',
      () => `nats://${host}?bucket=hadb-e2e-${Math.random().toString(36).slice(2, 10)}`,
    );
  });
});
