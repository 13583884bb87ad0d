/**
 * createNode takes storage and leases as URLs, in the CLI's forms: the node opens them, owns what
 * it opened (closed by node.close()), and refuses what the CLI refuses, with the same messages.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createFsLeaseStore } from '../../src/adapters/lease/fs.ts';
import { parseLeaseUrl, parseStorageUrl } from '../../src/adapters/url.ts';
import { InvalidArgumentError } from '../../src/errors.ts';
import { createNode, type HadbNode } from '../../src/runtime/node.ts';
import { createTestBucket, type TestBucket } from '../support/s3.ts';
import { describeWithService, findService } from '../support/services.ts';
import { FAST_TIMING, SECRET, waitFor } from './support/nodes.ts';
import { rejection, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-node-url-config-');
const SCHEMA = 'create table if not exists t(k text primary key)';

/** Open descriptors of this process on `file` (Linux: /proc/self/fd). */
function openDescriptors(file: string): number {
  const fds = fs.readdirSync('/proc/self/fd');
  return fds.filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false;
    }
  }).length;
}

/** Two nodes on the same URLs: one leads, a write on either is read on the other. */
async function twoNodesReplicate(storage: string, leases: string, dir: string): Promise<void> {
  const nodes: HadbNode[] = [];
  try {
    for (const id of ['a', 'b']) {
      nodes.push(
        await createNode({
          id,
          secret: SECRET,
          dataDir: path.join(dir, id),
          storage,
          leases,
          timing: FAST_TIMING,
        }),
      );
    }
    const [a, b] = await Promise.all(nodes.map((node) => node.open('db', { schema: SCHEMA })));
    if (a === undefined || b === undefined) throw new Error('not opened');
    await waitFor(
      () => [a, b].filter((db) => db.role === 'leader').length === 1,
      10_000,
      'a leader',
    );
    const follower = a.role === 'leader' ? b : a;
    const { token } = await follower.execute("insert into t values ('by url')");
    const leader = a.role === 'leader' ? a : b;
    expect(
      await leader.all('select k from t', [], { consistency: 'read-your-writes', after: token }),
    ).toEqual([{ k: 'by url' }]);
  } finally {
    await Promise.all(nodes.map((node) => node.close()));
  }
}

describe('createNode configured by URL', () => {
  test('file:// folders: two nodes elect one leader and replicate', async () => {
    const dir = freshDir('file');
    const storage = path.join(dir, 'storage');
    const leases = path.join(dir, 'leases');
    await twoNodesReplicate(pathToFileURL(storage).href, pathToFileURL(leases).href, dir);
    expect(fs.existsSync(path.join(storage, '.hadb-cluster'))).toBe(true);
    expect(fs.existsSync(path.join(leases, 'leases.sqlite'))).toBe(true);
  });

  test('a store opened from a URL is closed by node.close(); an instance given stays open', async () => {
    const dir = freshDir('owned');
    const leaseFile = path.join(dir, 'from-url.sqlite');
    const given = createFsLeaseStore({ path: path.join(dir, 'given.sqlite') });
    try {
      const byUrl = await createNode({
        id: 'a',
        secret: SECRET,
        dataDir: path.join(dir, 'a'),
        storage: pathToFileURL(path.join(dir, 'storage')).href,
        leases: pathToFileURL(leaseFile).href,
        timing: FAST_TIMING,
      });
      await byUrl.open('db', { schema: SCHEMA });
      expect(openDescriptors(leaseFile)).toBeGreaterThan(0);
      await byUrl.close();
      expect(openDescriptors(leaseFile)).toBe(0);

      const withInstance = await createNode({
        id: 'b',
        secret: SECRET,
        dataDir: path.join(dir, 'b'),
        storage: pathToFileURL(path.join(dir, 'other-storage')).href,
        leases: given,
        timing: FAST_TIMING,
      });
      await withInstance.close();
      await expect(given.get('anything')).resolves.toBeNull();
    } finally {
      await given.close();
    }
  });

  test('refuses what the CLI refuses, with the same messages, and opens nothing', async () => {
    const dir = freshDir('refused');
    const storage = pathToFileURL(path.join(dir, 'storage')).href;
    const leases = pathToFileURL(path.join(dir, 'leases')).href;
    const start = (urls: { storage: string; leases: string }) =>
      rejection(createNode({ id: 'a', secret: SECRET, dataDir: path.join(dir, 'a'), ...urls }));
    const cliMessage = (parse: () => unknown) => {
      try {
        parse();
      } catch (error) {
        return (error as Error).message;
      }
      throw new Error('the CLI parser accepted it');
    };
    const cases = [
      { storage: 's3://user:secret@bucket/x', leases },
      { storage: 'nats://127.0.0.1:4222?bucket=b', leases },
      { storage: 'data/here', leases },
      { storage, leases: 'file:///tmp/x?password=p' },
      { storage, leases: 'nats://127.0.0.1:4222' },
    ];
    for (const urls of cases) {
      const error = await start(urls);
      expect(error).toBeInstanceOf(InvalidArgumentError);
      const expected =
        urls.storage === storage
          ? cliMessage(() => parseLeaseUrl(urls.leases))
          : cliMessage(() => parseStorageUrl(urls.storage));
      expect((error as Error).message).toBe(expected);
      expect((error as Error).message).not.toContain('secret@');
    }
    // The good storage URL beside a bad lease URL was not opened either.
    expect(fs.existsSync(path.join(dir, 'storage'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'a'))).toBe(false);
  });
});

const s3 = await findService('s3');
const nats = await findService('nats');
await describeWithService(
  s3 === undefined ? 's3' : 'nats',
  'createNode configured by s3:// and nats:// URLs',
  () => {
    let bucket: TestBucket;
    const kvBuckets: string[] = [];
    beforeAll(async () => {
      bucket = await createTestBucket(s3 as string);
    });
    afterAll(async () => {
      await bucket.remove();
      const nc = await connect({ servers: nats as string });
      const jsm = await jetstreamManager(nc);
      for (const kv of kvBuckets.splice(0)) await jsm.streams.delete(`KV_${kv}`);
      await nc.close();
    });

    test('two nodes on an s3:// storage URL and a nats:// lease URL replicate', async () => {
      const prefix = `t-${randomBytes(6).toString('hex')}`;
      const kvBucket = `hadb-test-${randomBytes(5).toString('hex')}`;
      kvBuckets.push(kvBucket);
      const natsAddress = new URL(nats as string);
      await twoNodesReplicate(
        `s3://${bucket.name}/${prefix}?endpoint=${encodeURIComponent(s3 as string)}&region=us-east-1&forcePathStyle=true`,
        `nats://${natsAddress.host}?bucket=${kvBucket}`,
        freshDir('s3-nats'),
      );
    });
  },
);
