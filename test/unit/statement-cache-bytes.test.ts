import Database from 'better-sqlite3';
import { afterEach, describe, expect, test } from 'vitest';
import {
  prepare,
  STATEMENT_CACHE_BYTES,
  STATEMENT_CACHE_ENTRY_BYTES,
} from '../../src/statements/sql.ts';

// The cache is seen through identity: a cached statement comes back as the same object.

const connections: Database.Database[] = [];
afterEach(() => {
  for (const connection of connections.splice(0)) connection.close();
});

function open(): Database.Database {
  const connection = new Database(':memory:');
  connections.push(connection);
  return connection;
}

/** A valid statement whose SQL text is about `bytes` long, distinct per `n`. */
function statementOf(n: number, bytes: number): string {
  const head = `select ${n} as n /*`;
  return `${head}${'x'.repeat(Math.max(0, bytes - head.length - 2))}*/`;
}

describe('statement cache bounded by bytes', () => {
  test('a statement longer than the per-entry limit is never kept; a short one is', () => {
    const connection = open();
    expect(prepare(connection, 'select 1')).toBe(prepare(connection, 'select 1'));
    const big = statementOf(1, STATEMENT_CACHE_ENTRY_BYTES + 1024);
    expect(prepare(connection, big)).not.toBe(prepare(connection, big));
  });

  test('statements under the entry limit are evicted once their texts pass the total', () => {
    const connection = open();
    const size = STATEMENT_CACHE_ENTRY_BYTES - 1024;
    // Fewer statements than the count limit (200), more bytes than the byte limit.
    const count = Math.ceil(STATEMENT_CACHE_BYTES / size) + 10;
    expect(count).toBeLessThan(200);
    const first = prepare(connection, statementOf(0, size));
    for (let n = 1; n < count; n++) prepare(connection, statementOf(n, size));
    const last = statementOf(count - 1, size);
    expect(prepare(connection, last)).toBe(prepare(connection, last));
    expect(prepare(connection, statementOf(0, size))).not.toBe(first);
  });
});
