/**
 * Latency of the three lease store calls the role machine makes, per backend: a claim (create
 * of a new key, as for a database nobody led yet, or CAS with epoch + 1 on a key another holder
 * wrote, as in a takeover: half of the samples each), a renewal (update at the current revision)
 * and a read (get).
 *
 * Backends: memory (in process), fs (the SQLite lease file in a temp folder), s3 (the S3 lease
 * store on the emulator of `scripts/services up`, or HADB_TEST_S3_ENDPOINT) and nats (JetStream
 * KV, HADB_TEST_NATS_URL). Calls run one at a time, records are real lease records, keys are
 * spread over many databases. A backend that cannot be reached is reported as `{ error }` in the
 * result and on stderr, never left out.
 *
 *   npx tsx bench/lease-ops.ts [--quick]
 */
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { createFsLeaseStore } from '../src/adapters/lease/fs.ts';
import { createMemoryLeaseStore } from '../src/adapters/lease/memory.ts';
import { openNatsLeaseStore } from '../src/adapters/lease/nats.ts';
import { createS3LeaseStore } from '../src/adapters/lease/s3.ts';
import type { CasResult, LeaseStore } from '../src/adapters/lease/types.ts';
import { createS3Client, type S3ClientOptions } from '../src/adapters/s3-client.ts';
import { encodeLeaseRecord } from '../src/wire/lease-record.ts';
import {
  emit,
  log,
  machineLoad,
  makeTempDir,
  nowMs,
  percentile,
  quick,
  removeDir,
  round,
} from './lib.ts';

/** Databases (keys): each is claimed twice (create, then takeover), so claims = 2 × this. */
const DATABASES = quick ? 100 : 500;
const RENEWALS = quick ? 200 : 1000;
const READS = quick ? 200 : 1000;
const WARMUP = 20;
const TTL_MS = 5000;
const S3_ENDPOINT = process.env.HADB_TEST_S3_ENDPOINT ?? 'http://127.0.0.1:4566';
const NATS_URL = process.env.HADB_TEST_NATS_URL ?? 'nats://127.0.0.1:4222';

interface Figures {
  claimMsP50: number;
  claimMsP99: number;
  renewMsP50: number;
  renewMsP99: number;
  readMsP50: number;
  readMsP99: number;
}

type Outcome = Figures | { error: string };

/** A store to measure and how to dispose of it and what it left behind. */
interface Opened {
  store: LeaseStore;
  dispose(): Promise<void>;
}

const record = (holder: string, epoch: number) =>
  encodeLeaseRecord({
    holder,
    session: `${holder}-session`,
    epoch,
    ttlMs: TTL_MS,
    released: false,
    address: `http://127.0.0.1:7${epoch % 1000}/${holder}`,
  });

function revisionOf(result: CasResult, what: string): string {
  if (!result.ok) throw new Error(`${what} conflicted: the bench expects to be alone on its keys`);
  return result.revision;
}

async function timed<T>(samples: number[], call: () => Promise<T>): Promise<T> {
  const started = nowMs();
  const value = await call();
  samples.push(nowMs() - started);
  return value;
}

async function measure(store: LeaseStore, run: string): Promise<Figures> {
  const key = (i: number) => `${run}/db-${i}`;
  // Warm connections, caches and the JIT on keys of their own.
  for (let i = 0; i < WARMUP; i++) {
    const warm = `${run}/warm-${i}`;
    const revision = revisionOf(await store.create(warm, record('a', 1)), 'warm-up create');
    await store.update(warm, record('a', 1), revision);
    await store.get(warm);
  }

  const claims: number[] = [];
  const revisions: string[] = [];
  for (let i = 0; i < DATABASES; i++) {
    revisions.push(
      revisionOf(await timed(claims, () => store.create(key(i), record('a', 1))), 'create'),
    );
  }
  // The takeover: another node claims each lease with the next epoch, at the revision it read.
  for (let i = 0; i < DATABASES; i++) {
    const read = revisions[i] as string;
    revisions[i] = revisionOf(
      await timed(claims, () => store.update(key(i), record('b', 2), read)),
      'takeover',
    );
  }

  const renewals: number[] = [];
  for (let n = 0; n < RENEWALS; n++) {
    const i = n % DATABASES;
    const current = revisions[i] as string;
    revisions[i] = revisionOf(
      await timed(renewals, () => store.update(key(i), record('b', 2), current)),
      'renewal',
    );
  }

  const reads: number[] = [];
  for (let n = 0; n < READS; n++) {
    const entry = await timed(reads, () => store.get(key(n % DATABASES)));
    if (entry?.revision !== revisions[n % DATABASES]) throw new Error('a read missed a renewal');
  }

  const ms = (values: number[], p: number) => round(percentile(values, p), 4);
  return {
    claimMsP50: ms(claims, 50),
    claimMsP99: ms(claims, 99),
    renewMsP50: ms(renewals, 50),
    renewMsP99: ms(renewals, 99),
    readMsP50: ms(reads, 50),
    readMsP99: ms(reads, 99),
  };
}

async function openMemory(): Promise<Opened> {
  return { store: createMemoryLeaseStore(), dispose: async () => {} };
}

async function openFs(): Promise<Opened> {
  const dir = makeTempDir('lease-ops');
  const store = createFsLeaseStore({ path: path.join(dir, 'leases.sqlite') });
  return {
    store,
    dispose: async () => {
      await store.close();
      removeDir(dir);
    },
  };
}

async function openS3(): Promise<Opened> {
  // The emulator takes any credentials; real ones from the environment win.
  process.env.AWS_ACCESS_KEY_ID ??= 'test';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'test';
  process.env.AWS_REGION ??= 'us-east-1';
  const clientOptions: S3ClientOptions = {
    endpoint: S3_ENDPOINT,
    region: process.env.AWS_REGION,
    forcePathStyle: true,
  };
  const admin = createS3Client(clientOptions);
  const bucket = `hadb-bench-${randomBytes(6).toString('hex')}`;
  try {
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    admin.destroy();
    throw new Error(`S3 at ${S3_ENDPOINT}: ${describe(error)}`);
  }
  return {
    store: createS3LeaseStore({ bucket, prefix: 'leases', clientOptions }),
    dispose: () => removeBucket(admin, bucket),
  };
}

async function removeBucket(client: S3Client, bucket: string): Promise<void> {
  try {
    for (;;) {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
      const objects = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
      if (objects.length === 0) break;
      await client.send(
        new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: objects, Quiet: true } }),
      );
    }
    await client.send(new DeleteBucketCommand({ Bucket: bucket }));
  } finally {
    client.destroy();
  }
}

async function openNats(): Promise<Opened> {
  const bucket = `hadb-bench-${randomBytes(5).toString('hex')}`;
  const store = await openNatsLeaseStore({ servers: NATS_URL, bucket }).catch((error) => {
    throw new Error(`NATS at ${NATS_URL}: ${describe(error)}`);
  });
  return {
    store,
    dispose: async () => {
      await store.close();
      // The KV bucket is a stream; a bench leaves nothing behind.
      const nc = await connect({ servers: NATS_URL });
      try {
        await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`);
      } finally {
        await nc.close();
      }
    },
  };
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const detail = error.message || (typeof code === 'string' ? code : error.name);
  return typeof code === 'string' && !detail.includes(code) ? `${code}: ${detail}` : detail;
}

async function main(): Promise<void> {
  const backends: [string, () => Promise<Opened>][] = [
    ['memory', openMemory],
    ['fs', openFs],
    ['s3', openS3],
    ['nats', openNats],
  ];
  const results: Record<string, Outcome> = {};
  const run = `bench-${randomBytes(4).toString('hex')}`;
  for (const [name, open] of backends) {
    let opened: Opened | undefined;
    try {
      opened = await open();
      log(`${name}: measuring ${2 * DATABASES} claims, ${RENEWALS} renewals, ${READS} reads`);
      results[name] = await measure(opened.store, run);
      log(`${name}: ${JSON.stringify(results[name])}`);
    } catch (error) {
      results[name] = { error: describe(error) };
      log(`${name}: NOT MEASURED: ${describe(error)}`);
    } finally {
      await opened?.dispose().catch((error: unknown) => {
        log(`${name}: cleanup failed: ${describe(error)}`);
      });
    }
  }
  const missing = Object.entries(results).filter(([, outcome]) => 'error' in outcome);
  if (missing.length > 0) {
    log(
      `not measured: ${missing.map(([name]) => name).join(', ')} (start the services with scripts/services up)`,
    );
  }
  emit({
    bench: 'lease-ops',
    quick,
    ...results,
    samples: { claims: 2 * DATABASES, renewals: RENEWALS, reads: READS },
    claim: 'half create of a new key, half CAS with epoch + 1 at the revision read',
    ...machineLoad(),
  });
}

await main();
