/**
 * Failover time on the real backends, side by side with the same lease timing: three `hadb worker`
 * processes on S3 storage (the emulator of `scripts/services up`) with NATS leases (followers are
 * woken by the KV watch) and with S3 leases (followers poll). SIGKILL of the leader under a
 * 'replicated' write load, N times each (alternating backends per round to share the machine's
 * noise); failover = kill → first write acknowledged under a later epoch.
 *
 *   scripts/services up && npx tsx bench/failover-backends.ts [--quick]
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../src/adapters/s3-client.ts';
import { ClusterDriver, DEMO_TIMING, percentile } from '../src/cli/cluster-driver.ts';
import { emit, log, makeTempDir, median, quick, removeDir } from './lib.ts';

const KILLS = quick ? 3 : 10;
const DB = 'kv';
const RATE = 5;
const s3Endpoint = process.env.HADB_TEST_S3_ENDPOINT ?? 'http://127.0.0.1:4566';
const natsUrl = new URL(process.env.HADB_TEST_NATS_URL ?? 'nats://127.0.0.1:4222');
process.env.AWS_ACCESS_KEY_ID ??= 'test';
process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
process.env.AWS_REGION ??= 'us-east-1';

type Backend = 'nats' | 's3';

async function newBucket(): Promise<string> {
  const client = createS3Client({
    endpoint: s3Endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
  });
  const name = `hadb-bench-${randomBytes(5).toString('hex')}`;
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } catch (error) {
    throw new Error(
      `the S3 emulator at ${s3Endpoint} did not answer (${(error as Error).message}); start it with scripts/services up`,
    );
  } finally {
    client.destroy();
  }
  return name;
}

function s3Url(bucket: string, prefix: string): string {
  const query = new URLSearchParams({
    endpoint: s3Endpoint,
    region: 'us-east-1',
    forcePathStyle: 'true',
  });
  return `s3://${bucket}/${prefix}?${query}`;
}

const dir = makeTempDir('failover-backends');
const clusters = new Map<Backend, ClusterDriver>();
try {
  for (const backend of ['nats', 's3'] as const) {
    const bucket = await newBucket();
    const leasesUrl =
      backend === 'nats'
        ? `nats://${natsUrl.host}?bucket=hadb-bench-${randomBytes(4).toString('hex')}`
        : s3Url(bucket, 'leases');
    const cluster = new ClusterDriver({
      dir: path.join(dir, backend),
      nodes: 3,
      dbs: [DB],
      rate: RATE,
      timing: DEMO_TIMING,
      storageUrl: s3Url(bucket, 'data'),
      leasesUrl,
    });
    clusters.set(backend, cluster);
    await cluster.start();
    cluster.startLoad();
  }
  await sleep(1000);

  const failoverMs: Record<Backend, number[]> = { nats: [], s3: [] };
  for (let round = 1; round <= KILLS; round++) {
    const order: Backend[] = round % 2 ? ['nats', 's3'] : ['s3', 'nats'];
    for (const backend of order) {
      const cluster = clusters.get(backend) as ClusterDriver;
      const failover = await cluster.failLeader(DB, 'kill');
      if (failover.ms === null) throw new Error(`${backend}: no write acknowledged after kill`);
      failoverMs[backend].push(failover.ms);
      log(`round ${round} ${backend}: ${failover.node} killed → ${failover.ms} ms`);
      await sleep(200);
      await cluster.spawn(failover.node, { load: true }, 120_000);
      await sleep(300);
    }
  }

  const lost: Record<Backend, number> = { nats: 0, s3: 0 };
  for (const [backend, cluster] of clusters) {
    await cluster.stopLoad();
    const { reports } = await cluster.converge(60_000);
    const verification = cluster.verify(DB, reports);
    lost[backend] = verification.ackedWritesLost;
    if (verification.violations.length > 0) {
      log(`${backend} VIOLATIONS: ${verification.violations.join('; ')}`);
    }
  }
  emit({
    bench: 'failover-backends',
    quick,
    natsFailoverMsP50: median(failoverMs.nats),
    natsFailoverMsP99: percentile(failoverMs.nats, 99),
    s3FailoverMsP50: median(failoverMs.s3),
    s3FailoverMsP99: percentile(failoverMs.s3, 99),
    leaseTtlMs: DEMO_TIMING.ttlMs,
    kills: KILLS,
    ackedWritesLost: lost,
    samples: failoverMs,
  });
} finally {
  await Promise.allSettled([...clusters.values()].map((cluster) => cluster.close(3000)));
  removeDir(dir);
}
