import Database from 'better-sqlite3';
import { describe, expect, test } from 'vitest';
import { StatementRefusedError } from '../../src/errors.ts';
import {
  ALLOWED_PRAGMAS,
  checkClientSql,
  refusalOf,
  splitSql,
} from '../../src/statements/statement-gate.ts';

const REFUSED: string[] = [
  // ATTACH / DETACH, however written
  "ATTACH DATABASE '/tmp/x.db' AS x",
  "  /* c */ AtTaCh /* c */ '/tmp/x.db' as y",
  "attach\n'/tmp/x.db'\tas y",
  'DETACH x',
  "select 1; attach '/tmp/x.db' as y",
  "select 1;\n-- hidden\nATTACH '/tmp/x.db' as y;",
  "explain attach '/tmp/x.db' as y",
  // PRAGMAs that set, or read what a client may not read
  'PRAGMA wal_autocheckpoint=1000',
  'PRAGMA wal_autocheckpoint(1000)',
  'pragma main.wal_autocheckpoint = 0',
  'PRAGMA "main"."query_only" = 1',
  'PRAGMA [locking_mode] = EXCLUSIVE',
  "PRAGMA 'query_only' = 1",
  'pragma/**/query_only\n=\n1',
  'PRAGMA query_only=1',
  'PRAGMA locking_mode=EXCLUSIVE',
  'PRAGMA journal_mode=DELETE',
  'PRAGMA writable_schema=ON',
  'PRAGMA foreign_keys = ON',
  'PRAGMA busy_timeout = 60000',
  'PRAGMA wal_checkpoint',
  'PRAGMA wal_checkpoint(TRUNCATE)',
  'PRAGMA database_list',
  'PRAGMA optimize',
  'PRAGMA temp_store_directory',
  'PRAGMA shrink_memory',
  'PRAGMA user_version = 7',
  'PRAGMA',
  'explain pragma query_only=1',
  'EXPLAIN QUERY PLAN PRAGMA query_only = 1',
  'insert into t values (1);PRAGMA query_only=1',
  'with x as (select 1) select * from x; pragma query_only = 1',
  'create trigger tr after insert on t begin select 1; end; pragma query_only=1',
  // VACUUM
  'VACUUM',
  "VACUUM INTO '/tmp/copy.db'",
  "vacuum main into '/tmp/copy.db'",
  // transaction control inside hadb's transaction
  'BEGIN',
  'begin immediate',
  'COMMIT',
  'END',
  'END TRANSACTION foo',
  'ROLLBACK',
  'SAVEPOINT a',
  'RELEASE a',
  'insert into t values (1); commit; insert into t values (2)',
  // hadb's own tables
  'drop table _hadb_requests',
  'DROP TABLE "_HADB_REQUESTS"',
  'delete from main._hadb_requests',
  'delete from [main].[_hadb_requests]',
  'insert into `_hadb_requests` values (1, 2, 3)',
  "drop table '_hadb_requests'",
  'select * from _Hadb_Requests',
  'with x as (select 1) delete from _hadb_requests',
  'create trigger tr after insert on t begin delete from _hadb_requests; end',
  "select * from pragma_table_info('_hadb_requests')",
  // a setting's table-valued function given an argument
  'select * from pragma_query_only(1)',
  'select * from PRAGMA_USER_VERSION ( 7 )',
  // writes to SQLite's own tables
  "insert into sqlite_master values ('table', 'x', 'x', 0, 'create table x(a)')",
  'update main.sqlite_master set sql = null',
  'delete from "sqlite_sequence"',
  'update or replace sqlite_sequence set seq = 0',
  'drop table if exists sqlite_stat1',
  'create trigger tr after insert on t begin delete from sqlite_sequence; end',
  // code and files
  "select load_extension('/tmp/evil.so')",
  'select "load_extension"(\'/tmp/evil.so\')',
  // table-valued pragma functions outside the allowlist
  'select * from pragma_database_list',
  'select file from "pragma_database_list"',
  'select * from main.pragma_wal_checkpoint',
  // temporary objects stay on the shared writer connection
  'create temp table x(a)',
  'CREATE TEMPORARY VIEW v AS SELECT 1',
  'create temp trigger tr after insert on t begin select 1; end',
  'create table temp.x(a)',
  'create table if not exists "temp".x(a)',
];

const ALLOWED: string[] = [
  "select 'attach database x as y'",
  "insert into t(v) values ('pragma query_only=1; attach ''x'' as y')",
  "select 'VACUUM', 'BEGIN', 'commit'",
  'select "pragma" from t',
  'select [attach], `vacuum` from t2',
  "select 1 -- ; attach 'x' as y",
  'select 1 /* ; pragma query_only=1 */',
  "select x'00ff'",
  'select 1; select 2;',
  'PRAGMA table_info(t)',
  'pragma table_info("t")',
  'PRAGMA main.table_info(t)',
  'PRAGMA index_list(t)',
  'PRAGMA foreign_key_list(t)',
  'PRAGMA foreign_key_check',
  'PRAGMA table_list',
  'PRAGMA user_version',
  'PRAGMA integrity_check',
  'PRAGMA quick_check',
  'PRAGMA compile_options',
  'PRAGMA cache_size',
  'PRAGMA locking_mode',
  'PRAGMA page_size',
  'PRAGMA data_version',
  "select * from pragma_table_info('t')",
  "select name from pragma_index_list('t')",
  'select count(*) from pragma_compile_options',
  'select name from sqlite_master',
  "select * from sqlite_schema where type = 'table'",
  'insert into t(v) select name from sqlite_master',
  'create table pragma_level(x)',
  'create trigger tr after insert on t begin select case when 1 then 2 end; insert into t2 values (1); end',
  'with recursive c(x) as (select 1 union all select x + 1 from c limit 3) insert into t(v) select x from c',
  'create table t3(a, b); create index t3_a on t3(a)',
  "update t set v = 'sqlite_master' where v = 'x'",
  'insert into t(v) values (1) on conflict do update set v = 2',
];

describe('the statement gate', () => {
  test.each(REFUSED)('refuses %j', (sql) => {
    expect(refusalOf(sql, 'statement')).toMatch(/ is refused: /);
    expect(() => checkClientSql(sql, 'statement')).toThrow(StatementRefusedError);
  });

  test.each(ALLOWED)('allows %j', (sql) => {
    expect(refusalOf(sql, 'statement')).toBeNull();
  });

  test('what it allows is real SQL that SQLite runs', () => {
    for (const sql of ALLOWED) {
      const scratch = new Database(':memory:');
      scratch.exec('create table t(v, "pragma"); create table t2(attach, vacuum)');
      expect(() => scratch.exec(sql), sql).not.toThrow();
      scratch.close();
    }
  });

  test('SQLite itself takes every allowed PRAGMA read as a read-only statement', () => {
    const db = new Database(':memory:');
    db.exec('create table t(v)');
    for (const pragma of ALLOWED_PRAGMAS) {
      expect(refusalOf(`PRAGMA ${pragma}`, 'statement'), pragma).toBeNull();
      expect(db.prepare(`PRAGMA ${pragma}`).readonly, pragma).toBe(true);
    }
    db.close();
  });

  test('the PRAGMA evasions are ones SQLite obeys', () => {
    for (const sql of [
      'pragma/**/query_only\n=\n1',
      'PRAGMA "main"."query_only" = 1',
      "PRAGMA 'query_only' = 1",
    ]) {
      const scratch = new Database(':memory:');
      scratch.exec(sql);
      expect(scratch.pragma('query_only', { simple: true }), sql).toBe(1);
      scratch.close();
    }
  });

  test('user_version may be set by migrations only', () => {
    expect(refusalOf('PRAGMA user_version = 3', 'migration')).toBeNull();
    expect(refusalOf('create table a(x); pragma user_version(3)', 'migration')).toBeNull();
    expect(refusalOf('PRAGMA user_version = 3', 'script')).toMatch(/set only by migrations/);
    expect(refusalOf('PRAGMA user_version = 3', 'interactive')).toMatch(/set only by migrations/);
    expect(refusalOf('PRAGMA query_only = 1', 'migration')).toMatch(/refused/);
  });

  test('inside a client transaction, savepoints are its own; ending it is not', () => {
    for (const sql of ['SAVEPOINT a', 'RELEASE a', 'RELEASE SAVEPOINT a', 'ROLLBACK TO a']) {
      expect(refusalOf(sql, 'interactive'), sql).toBeNull();
    }
    for (const sql of ['COMMIT', 'END TRANSACTION x', 'ROLLBACK', 'BEGIN']) {
      expect(refusalOf(sql, 'interactive'), sql).toMatch(/transaction control/);
    }
    expect(refusalOf('ROLLBACK TO a', 'statement')).toMatch(/transaction control/);
  });

  test('the error names what was refused and why, without echoing a huge text', () => {
    const huge = `insert into t(v) values ('${'x'.repeat(1_000_000)}'); PRAGMA query_only = 1`;
    const error = (() => {
      try {
        checkClientSql(huge, 'statement');
      } catch (caught) {
        return caught;
      }
    })() as StatementRefusedError;
    expect(error).toBeInstanceOf(StatementRefusedError);
    expect(error.code).toBe('STATEMENT_REFUSED');
    expect(error.message).toMatch(
      /^STATEMENT_REFUSED: setting PRAGMA query_only is refused: client SQL may read it but not change it/,
    );
    expect(error.message.length).toBeLessThan(400);
  });

  test('splits statements as SQLite does, trigger bodies and CASE … END included', () => {
    expect(
      splitSql(
        "create trigger tr after insert on t begin select case when 1 then 'a;' end; insert into t2 values (1); end; -- x\npragma user_version; /* ; */",
      ),
    ).toEqual([
      "create trigger tr after insert on t begin select case when 1 then 'a;' end; insert into t2 values (1); end",
      'pragma user_version',
    ]);
  });
});
