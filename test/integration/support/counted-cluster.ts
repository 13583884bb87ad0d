/** A leader and a follower over storage that counts the follower's requests (support module). */
import path from 'node:path';
import { createMemoryStorage } from '../../../src/adapters/storage/memory.ts';
import type { StorageBackend } from '../../../src/adapters/storage/types.ts';
import { SqliteFollower } from '../../../src/replication/sqlite/follower.ts';
import { openNewLeader } from './replication.ts';

/** Storage that records every request it is asked: by operation, and with the key or prefix. */
export function counting(inner: StorageBackend) {
  const calls: string[] = [];
  const requests: { op: string; key: string }[] = [];
  const count = <T>(op: string, key: string, call: () => Promise<T>) => {
    calls.push(op);
    requests.push({ op, key });
    return call();
  };
  const storage: StorageBackend = {
    put: (key, body) => count('put', key, () => inner.put(key, body)),
    putIfAbsent: (key, body) => count('putIfAbsent', key, () => inner.putIfAbsent(key, body)),
    get: (key, range) => count('get', key, () => inner.get(key, range)),
    list: (prefix, options) => count('list', prefix, () => inner.list(prefix, options)),
    delete: (keys) => count('delete', keys.join(' '), () => inner.delete(keys)),
  };
  return { storage, calls, requests };
}

export async function countedCluster(dir: string) {
  const inner = createMemoryStorage();
  const { storage, calls } = counting(inner);
  const common = { db: 'app', prefix: 'p' };
  const leader = await openNewLeader({ ...common, storage: inner, path: path.join(dir, 'l.db') });
  const write = async (v: string) => {
    leader.database.prepare('INSERT INTO t (v) VALUES (?)').run(v);
    await leader.flush();
  };
  leader.database.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)');
  await leader.flush();
  const follower = await SqliteFollower.open({
    ...common,
    storage,
    path: path.join(dir, 'f.db'),
  });
  await follower.pull();
  return { dir, inner, storage, calls, common, leader, write, follower };
}
