import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '../../src/adapters/storage/memory.ts';
import { DatabaseDivergedError } from '../../src/errors.ts';
import type { LeaderEvent } from '../../src/replication/sqlite/leader.ts';
import { openNewLeader, rejection, tempDirs } from './support/replication.ts';

const freshDir = tempDirs('hadb-leader-self-check-');

async function checkedLeader(label: string, options: { walTruncateBytes?: number } = {}) {
  const events: LeaderEvent[] = [];
  const file = path.join(freshDir(label), 'leader.db');
  const leader = await openNewLeader({
    path: file,
    db: 'app',
    storage: createMemoryStorage(),
    prefix: 'p',
    // Every flush checks, and backfills the file, so shipped pages are in it.
    selfCheckBudget: Number.POSITIVE_INFINITY,
    checkpointEveryBytes: 1,
    ...options,
    onEvent: (event) => events.push(event),
  });
  leader.database.exec('CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = leader.database.prepare('INSERT INTO notes (id, body) VALUES (?, ?)');
  const write = async (from: number, count = 30) => {
    for (let i = from; i < from + count; i++) insert.run(i, `note ${i} `.repeat(30));
    return leader.flush();
  };
  return { leader, file, events, write };
}

describe('a leader checks its own file against the database checksum it shipped', () => {
  it('and finds nothing wrong through many flushes, checkpoints and WAL restarts', async () => {
    const { leader, events, write } = await checkedLeader('clean', { walTruncateBytes: 64 * 1024 });
    for (let round = 0; round < 20; round++) await write(round * 100);
    leader.database.exec('DELETE FROM notes WHERE id % 3 = 0; VACUUM');
    await leader.flush();
    await write(5000);
    expect(events.filter((event) => event.type === 'diverged')).toEqual([]);
    expect(leader.diverged).toBeNull();
    await leader.close();
  });

  it('stops leading loudly once its file was changed behind its back', async () => {
    // Each flush starts the WAL over: the file alone holds the shipped pages, as SQLite reads them.
    const { leader, file, events, write } = await checkedLeader('tampered', {
      walTruncateBytes: 1,
    });
    await write(0);
    await write(100);
    // A leaf of the first rows, which later writes leave alone: only the self-check can tell.
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from([0xab, 0xcd]), 0, 2, 2 * 4096 + 2000);
    fs.closeSync(fd);

    // The check after a flush runs once it resolved, when no other flush is queued behind it.
    await write(200).catch(() => {});
    await new Promise((resolve) => setTimeout(resolve, 50));
    leader.database.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(9999, 'late');
    const error = await rejection(leader.flush());
    expect(error).toBeInstanceOf(DatabaseDivergedError);
    expect((error as DatabaseDivergedError).code).toBe('DATABASE_DIVERGED');
    expect(leader.diverged).toBe(error);
    expect(events.filter((event) => event.type === 'diverged')).toEqual([
      { type: 'diverged', error },
    ]);
    await leader.close();
  });
});
