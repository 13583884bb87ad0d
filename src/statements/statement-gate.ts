import Database from 'better-sqlite3';
import { SqlError, StatementRefusedError } from '../errors.ts';
import { isSqlValue } from '../wire/forward.ts';

/**
 * The statement gate: client SQL may not change what the replication machinery depends on
 * (journal and checkpoint settings, locking, attached files, hadb's own tables) nor reach outside
 * its database (invariant I8). better-sqlite3 has no authorizer and PRAGMAs take effect when a
 * statement is prepared, so the decision is made from the text, before anything is prepared: a
 * tokenizer that knows SQLite's comments, quoting and statement boundaries, then rules on tokens.
 */

/**
 * Where the SQL runs. `statement`: one statement of a transaction hadb owns (execute, batch,
 * reads, forwarded requests, `transaction(fn)`). `interactive`: inside a client's own open
 * transaction (savepoints allowed). `script`: a schema script (several statements). `migration`:
 * a migration script, which may also set `user_version`.
 */
export type SqlContext = 'statement' | 'interactive' | 'script' | 'migration';

/** PRAGMAs whose argument names a table or index, or that only read: allowed, with any argument. */
const INTROSPECTION_PRAGMAS = new Set([
  'table_info',
  'table_xinfo',
  'table_list',
  'index_list',
  'index_info',
  'index_xinfo',
  'foreign_key_list',
  'foreign_key_check',
  'integrity_check',
  'quick_check',
]);

/**
 * PRAGMAs allowed only without a value (reading a setting or a fact, changing nothing): each
 * prepares as a read-only statement (`journal_mode` does not, so it is not here).
 */
const READ_ONLY_PRAGMAS = new Set([
  'application_id',
  'auto_vacuum',
  'busy_timeout',
  'cache_size',
  'collation_list',
  'compile_options',
  'data_version',
  'encoding',
  'foreign_keys',
  'freelist_count',
  'function_list',
  'locking_mode',
  'module_list',
  'page_count',
  'page_size',
  'pragma_list',
  'query_only',
  'schema_version',
  'synchronous',
  'user_version',
  'wal_autocheckpoint',
]);

/** Documented for the README: what client SQL may run as a PRAGMA. */
export const ALLOWED_PRAGMAS: readonly string[] = [
  ...INTROSPECTION_PRAGMAS,
  ...READ_ONLY_PRAGMAS,
].sort();

const TRANSACTION_WORDS = new Set(['begin', 'commit', 'end', 'rollback', 'savepoint', 'release']);
/** Words after which a name is written to (or created, dropped, altered). */
const WRITE_TARGET_WORDS = new Set(['into', 'update', 'table', 'index', 'view', 'trigger']);

export type TokenKind = 'word' | 'quoted' | 'string' | 'blob' | 'number' | 'param' | 'op';

export interface Token {
  kind: TokenKind;
  /** Words lowercased; quoted identifiers and strings without their quotes (as written). */
  value: string;
  start: number;
  end: number;
}

/** SQLite's tokenizer, as far as the gate needs it: comments and whitespace are dropped. */
export function tokenize(sql: string): Token[] {
  const tokens: Token[] = [];
  const n = sql.length;
  let i = 0;
  while (i < n) {
    const ch = sql.charCodeAt(i);
    const start = i;
    if (ch === 0x20 || ch === 0x09 || ch === 0x0a || ch === 0x0c || ch === 0x0d) {
      i++;
      continue;
    }
    if (ch === 0x2d && sql.charCodeAt(i + 1) === 0x2d) {
      const end = sql.indexOf('\n', i + 2);
      i = end === -1 ? n : end + 1;
      continue;
    }
    if (ch === 0x2f && sql.charCodeAt(i + 1) === 0x2a) {
      const end = sql.indexOf('*/', i + 2);
      i = end === -1 ? n : end + 2;
      continue;
    }
    if (ch === 0x27 || ch === 0x22 || ch === 0x60) {
      // '…', "…", `…`: a doubled quote stands for itself. Unterminated runs to the end.
      const quote = sql[i] as string;
      let value = '';
      i++;
      for (;;) {
        const close = sql.indexOf(quote, i);
        if (close === -1) {
          value += sql.slice(i);
          i = n;
          break;
        }
        value += sql.slice(i, close);
        if (sql[close + 1] === quote) {
          value += quote;
          i = close + 2;
          continue;
        }
        i = close + 1;
        break;
      }
      tokens.push({ kind: ch === 0x27 ? 'string' : 'quoted', value, start, end: i });
      continue;
    }
    if (ch === 0x5b) {
      const close = sql.indexOf(']', i + 1);
      i = close === -1 ? n : close + 1;
      tokens.push({
        kind: 'quoted',
        value: sql.slice(start + 1, close === -1 ? n : close),
        start,
        end: i,
      });
      continue;
    }
    if ((ch === 0x78 || ch === 0x58) && sql.charCodeAt(i + 1) === 0x27) {
      const close = sql.indexOf("'", i + 2);
      i = close === -1 ? n : close + 1;
      tokens.push({ kind: 'blob', value: sql.slice(start, i), start, end: i });
      continue;
    }
    if (isDigit(ch) || (ch === 0x2e && isDigit(sql.charCodeAt(i + 1)))) {
      i++;
      while (i < n) {
        const c = sql.charCodeAt(i);
        const prev = sql.charCodeAt(i - 1);
        if (isIdChar(c) || c === 0x2e) i++;
        else if ((c === 0x2b || c === 0x2d) && (prev === 0x65 || prev === 0x45)) i++;
        else break;
      }
      tokens.push({ kind: 'number', value: sql.slice(start, i), start, end: i });
      continue;
    }
    if (ch === 0x3f || ch === 0x3a || ch === 0x40 || ch === 0x24) {
      i++;
      while (i < n && isIdChar(sql.charCodeAt(i))) i++;
      tokens.push({ kind: 'param', value: sql.slice(start, i), start, end: i });
      continue;
    }
    if (isIdChar(ch)) {
      while (i < n && isIdChar(sql.charCodeAt(i))) i++;
      tokens.push({ kind: 'word', value: sql.slice(start, i).toLowerCase(), start, end: i });
      continue;
    }
    i++;
    tokens.push({ kind: 'op', value: sql[start] as string, start, end: i });
  }
  return tokens;
}

function isDigit(ch: number): boolean {
  return ch >= 0x30 && ch <= 0x39;
}

/** SQLite takes every character at or above 0x80 as part of an identifier. */
function isIdChar(ch: number): boolean {
  return (
    (ch >= 0x61 && ch <= 0x7a) ||
    (ch >= 0x41 && ch <= 0x5a) ||
    isDigit(ch) ||
    ch === 0x5f ||
    ch === 0x24 ||
    ch >= 0x80
  );
}

/**
 * The statements of `tokens`, split at the semicolons that end one: inside a CREATE TRIGGER
 * body only the `; END ;` that closes it does (SQLite's own rule in `sqlite3_complete`).
 */
export function statementsOf(tokens: readonly Token[]): Token[][] {
  const statements: Token[][] = [];
  let current: Token[] = [];
  for (const token of tokens) {
    if (token.kind === 'op' && token.value === ';') {
      if (isTrigger(current) && !endsTrigger(current)) {
        current.push(token);
        continue;
      }
      if (current.length > 0) statements.push(current);
      current = [];
      continue;
    }
    current.push(token);
  }
  if (current.length > 0) statements.push(current);
  return statements;
}

/** The SQL text split into statements, without their ending semicolons. */
export function splitSql(sql: string): string[] {
  return statementsOf(tokenize(sql)).map((statement) =>
    sql.slice((statement[0] as Token).start, (statement.at(-1) as Token).end),
  );
}

function isTrigger(statement: readonly Token[]): boolean {
  const [first, second, third] = statement;
  if (!isWord(first, 'create')) return false;
  if (isWord(second, 'trigger')) return true;
  return (isWord(second, 'temp') || isWord(second, 'temporary')) && isWord(third, 'trigger');
}

function endsTrigger(statement: readonly Token[]): boolean {
  const last = statement.at(-1);
  const before = statement.at(-2);
  return isWord(last, 'end') && before?.kind === 'op' && before.value === ';';
}

function isWord(token: Token | undefined, word: string): boolean {
  return token?.kind === 'word' && token.value === word;
}

/**
 * A token that can stand for a name (a word, a quoted identifier, or a string, which SQLite takes
 * as a name where one is expected), lowercased; long ones cut, as no name the gate knows is long.
 */
function nameOf(token: Token | undefined): string | null {
  if (!token) return null;
  if (token.kind === 'word') return token.value;
  if (token.kind === 'quoted' || token.kind === 'string') {
    return token.value.slice(0, 64).toLowerCase();
  }
  return null;
}

let pragmaNames: Set<string> | null = null;

/** The PRAGMAs this SQLite knows: each also exists as a table-valued `pragma_<name>` function. */
function knownPragmas(): Set<string> {
  if (pragmaNames === null) {
    const scratch = new Database(':memory:');
    try {
      pragmaNames = new Set(
        scratch.prepare('select name from pragma_pragma_list').pluck().all() as string[],
      );
    } finally {
      scratch.close();
    }
  }
  return pragmaNames;
}

/** Verdicts of recent texts (refusal message or null): most client SQL repeats. */
const verdicts = new Map<string, string | null>();
const VERDICT_CACHE_SIZE = 500;
const CACHED_SQL_MAX_LENGTH = 4096;

/**
 * Throws {@link StatementRefusedError} when `sql` (one statement, or a script of several) does
 * something client SQL may not: see the README's "What client SQL may not do".
 */
export function checkClientSql(sql: string, context: SqlContext): void {
  const cacheable = sql.length <= CACHED_SQL_MAX_LENGTH;
  const key = cacheable ? `${context}\u0000${sql}` : '';
  let verdict = cacheable ? verdicts.get(key) : undefined;
  if (verdict === undefined) {
    verdict = refusalOf(sql, context);
    if (cacheable) {
      if (verdicts.size >= VERDICT_CACHE_SIZE)
        verdicts.delete(verdicts.keys().next().value as string);
      verdicts.set(key, verdict);
    }
  }
  if (verdict !== null) throw new StatementRefusedError(verdict);
}

/**
 * Every statement of a request, before any of them runs: one refused, none runs. Its parameters
 * too, here rather than where they bind, so a write forwarded to the leader fails as one run
 * here would.
 */
export function checkClientStatements(
  statements: readonly { sql: string; params?: unknown }[],
  context: SqlContext,
): void {
  for (const [index, statement] of statements.entries()) {
    checkClientSql(statement.sql, context);
    checkParams(statement.params, index);
  }
}

/** Positional values or named ones, each null, a number, a bigint, a string or a Uint8Array. */
function checkParams(params: unknown, index: number): void {
  if (params === undefined || params === null) return;
  const named = !Array.isArray(params);
  if (named && (typeof params !== 'object' || params instanceof Uint8Array)) {
    throw new SqlError(
      'SQLITE_MISUSE',
      `the parameters of statement ${index} must be an array or an object of named values`,
    );
  }
  for (const [at, value] of Object.entries(params)) {
    if (isSqlValue(value)) continue;
    const which = named ? `:${at}` : `${Number(at) + 1}`;
    throw new SqlError(
      'SQLITE_MISUSE',
      `parameter ${which} of statement ${index} is ${describeValue(value)}: SQL values are null, numbers, bigints, strings and Uint8Arrays`,
    );
  }
}

function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value !== 'object') return `a ${typeof value}`;
  return `an object (${(value as object).constructor?.name ?? 'no prototype'})`;
}

/** Why `sql` is refused, or null. */
export function refusalOf(sql: string, context: SqlContext): string | null {
  const tokens = tokenize(sql);
  const why = (what: string, reason: string, at: Token): string =>
    `${what} is refused: ${reason} (in ${excerpt(sql, at)})`;
  // Anywhere in the text, whatever statement the token belongs to.
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as Token;
    const name = nameOf(token);
    if (name === null) continue;
    if (name.startsWith('_hadb')) {
      return why(
        `the name ${JSON.stringify(clip(token.value))}`,
        "hadb's own tables are not for client SQL",
        token,
      );
    }
    if (name.startsWith('pragma_')) {
      const pragma = name.slice('pragma_'.length);
      if (knownPragmas().has(pragma) && !isReadablePragma(pragma)) {
        return why(
          `the table-valued function ${name}`,
          `PRAGMA ${pragma} is not one client SQL may read`,
          token,
        );
      }
      // An argument would name a schema or a value; neither is for client SQL (the hostile suite's
      // `pragma_query_only(1)`): refused here rather than left to SQLite's own error.
      if (READ_ONLY_PRAGMAS.has(pragma) && isOp(tokens[i + 1], '(') && !isOp(tokens[i + 2], ')')) {
        return why(
          `${name} with an argument`,
          `client SQL reads PRAGMA ${pragma} only as pragma_${pragma} with no argument`,
          token,
        );
      }
    }
    if (token.kind === 'string') continue;
    if (name === 'load_extension') {
      return why('load_extension()', 'client SQL may not load code into the server', token);
    }
    if (token.kind === 'word' && WRITE_TARGET_WORDS.has(name)) {
      const target = writeTarget(tokens, i);
      if (target?.startsWith('sqlite_')) {
        return why(
          `writing to ${target}`,
          "SQLite's own tables are read-only to client SQL",
          token,
        );
      }
    }
    if (isWord(token, 'delete') && isWord(tokens[i + 1], 'from')) {
      const target = qualifiedName(tokens, i + 2);
      if (target?.startsWith('sqlite_')) {
        return why(
          `writing to ${target}`,
          "SQLite's own tables are read-only to client SQL",
          token,
        );
      }
    }
    // After any semicolon, trigger bodies included: none of these can start a trigger command.
    const startsAfterSemicolon = i === 0 || isOp(tokens[i - 1], ';');
    if (startsAfterSemicolon && token.kind === 'word') {
      const refused = refusedHead(tokens, i, context, false);
      if (refused) return why(refused.what, refused.reason, token);
    }
  }
  // Statement by statement: transaction control, temporary objects, `END`.
  for (const statement of statementsOf(tokens)) {
    const refused = refusedHead(statement, 0, context, true);
    if (refused) return why(refused.what, refused.reason, statement[0] as Token);
  }
  return null;
}

function isOp(token: Token | undefined, op: string): boolean {
  return token?.kind === 'op' && token.value === op;
}

function isReadablePragma(name: string): boolean {
  return INTROSPECTION_PRAGMAS.has(name) || READ_ONLY_PRAGMAS.has(name);
}

/** What a statement starting at `tokens[at]` does that its context does not allow. */
function refusedHead(
  tokens: readonly Token[],
  at: number,
  context: SqlContext,
  wholeStatement: boolean,
): { what: string; reason: string } | null {
  let i = at;
  // EXPLAIN [QUERY PLAN] prepares the statement under it.
  if (isWord(tokens[i], 'explain')) {
    i++;
    if (isWord(tokens[i], 'query') && isWord(tokens[i + 1], 'plan')) i += 2;
  }
  const head = tokens[i];
  if (head?.kind !== 'word') return null;
  switch (head.value) {
    case 'attach':
    case 'detach':
      return {
        what: head.value.toUpperCase(),
        reason: 'client SQL may not reach database files other than its own',
      };
    case 'vacuum':
      return { what: 'VACUUM', reason: 'VACUUM rewrites the file (VACUUM INTO writes anywhere)' };
    case 'pragma':
      return refusedPragma(tokens, i + 1, context);
    case 'create':
      return createsTemporary(tokens, i)
        ? {
            what: 'a temporary table, view, index or trigger',
            reason: 'it would stay on the shared connection and is never replicated',
          }
        : null;
    default:
      break;
  }
  if (!TRANSACTION_WORDS.has(head.value)) return null;
  // `END` closes a trigger body: judged only where a statement really starts.
  if (head.value === 'end' && !wholeStatement) return null;
  if (context === 'interactive' && isSavepointLevel(tokens, i)) return null;
  return {
    what: `transaction control (${head.value.toUpperCase()})`,
    reason:
      context === 'interactive'
        ? 'the transaction is ended through its own commit or rollback'
        : 'hadb runs the statements in its own transaction',
  };
}

/** `CREATE TEMP …`, or a CREATE whose object is named `temp.<name>`. */
function createsTemporary(tokens: readonly Token[], at: number): boolean {
  if (isWord(tokens[at + 1], 'temp') || isWord(tokens[at + 1], 'temporary')) return true;
  for (let i = at + 1; i < at + 5 && i < tokens.length; i++) {
    const token = tokens[i] as Token;
    if (token.kind !== 'word' || !['table', 'view', 'index', 'trigger'].includes(token.value)) {
      continue;
    }
    let j = i + 1;
    if (isWord(tokens[j], 'if')) j += isWord(tokens[j + 1], 'not') ? 3 : 2;
    const schema = nameOf(tokens[j]);
    return (schema === 'temp' || schema === 'temporary') && isOp(tokens[j + 1], '.');
  }
  return false;
}

/** SAVEPOINT, RELEASE and ROLLBACK TO: inside a client's open transaction they are its own. */
function isSavepointLevel(tokens: readonly Token[], i: number): boolean {
  const head = tokens[i] as Token;
  if (head.value === 'savepoint' || head.value === 'release') return true;
  if (head.value !== 'rollback') return false;
  const next = isWord(tokens[i + 1], 'transaction') ? i + 2 : i + 1;
  return isWord(tokens[next], 'to');
}

function refusedPragma(
  tokens: readonly Token[],
  at: number,
  context: SqlContext,
): { what: string; reason: string } | null {
  let i = at;
  let name = nameOf(tokens[i]);
  if (name !== null && isOp(tokens[i + 1], '.')) {
    i += 2;
    name = nameOf(tokens[i]);
  }
  if (name === null) return { what: 'PRAGMA', reason: 'a PRAGMA needs a name' };
  const next = tokens[i + 1];
  const setsValue = next !== undefined && (isOp(next, '=') || isOp(next, '('));
  const shown = `PRAGMA ${clip(name)}`;
  if (INTROSPECTION_PRAGMAS.has(name)) return null;
  if (READ_ONLY_PRAGMAS.has(name)) {
    if (!setsValue) return null;
    if (name === 'user_version' && context === 'migration') return null;
    return {
      what: `setting ${shown}`,
      reason:
        name === 'user_version'
          ? 'user_version is set only by migrations'
          : 'client SQL may read it but not change it',
    };
  }
  return {
    what: shown,
    reason:
      "client SQL may run only read-only PRAGMAs on hadb's allowlist (such as table_info, index_list, user_version)",
  };
}

/** The (unqualified, lowercased) name written to after the word at `at`, if one follows. */
function writeTarget(tokens: readonly Token[], at: number): string | null {
  let i = at + 1;
  const word = (tokens[at] as Token).value;
  if (word === 'update' && isWord(tokens[i], 'or')) i += 2;
  if (word !== 'into' && word !== 'update') {
    if (isWord(tokens[i], 'if')) {
      i++;
      if (isWord(tokens[i], 'not')) i++;
      if (isWord(tokens[i], 'exists')) i++;
    }
  }
  return qualifiedName(tokens, i);
}

/** `name` or `schema.name` at `at`: the name, lowercased. */
function qualifiedName(tokens: readonly Token[], at: number): string | null {
  const first = nameOf(tokens[at]);
  if (first === null) return null;
  if (isOp(tokens[at + 1], '.')) return nameOf(tokens[at + 2]);
  return first;
}

function clip(text: string, max = 40): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** A short piece of the SQL around a token: never the whole of a huge text. */
function excerpt(sql: string, token: Token): string {
  const from = Math.max(0, token.start - 20);
  const text = sql.slice(from, token.start + 60).replace(/\s+/g, ' ');
  return JSON.stringify(`${from > 0 ? '…' : ''}${text}${token.start + 60 < sql.length ? '…' : ''}`);
}
