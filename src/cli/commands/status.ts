/**
 * `hadb status`: asks every node of a cluster for its `GET /status` and shows, for each database,
 * what each node thinks: role, epoch, position, lag behind the most advanced node, and leader.
 * Unlike the other operations commands it talks to nodes, not to storage.
 */
import type { Command } from 'commander';
import { messageOf } from '../../error-message.ts';
import { InvalidArgumentError } from '../../errors.ts';
import { redactUrl, resolveConfig } from '../config.ts';
import {
  type CommandContext,
  EXIT_FAILED,
  EXIT_OK,
  positiveIntegerOption,
  runCommand,
  writeJson,
  writeLine,
} from './shared.ts';

export const DEFAULT_STATUS_TIMEOUT_MS = 2000;

interface StatusOptionValues {
  nodes?: string;
  config?: string;
  timeout?: number;
  json?: boolean;
}

/** One database as a node reports it (the shape of `DatabaseStatus`). */
export interface ReportedDatabase {
  name: string;
  role: string;
  epoch: number;
  seq: number;
  caughtUp: boolean;
  leader: string | null;
  leaseProblem: string | null;
  /** Its copy cannot catch up with storage (stuck) or its actor stopped (failed). */
  problem: { state: string; code: string; seq: number; message: string } | null;
}

export interface NodeReport {
  url: string;
  ok: boolean;
  error?: string;
  /** The node's id, as it reports it. */
  node?: string;
  databases?: ReportedDatabase[];
}

export interface StatusRow {
  node: string;
  url: string;
  role: string;
  epoch: number;
  seq: number;
  /** The highest seq any node reports for the database, minus this node's. */
  lag: number;
  caughtUp: boolean;
  /** The leader as this node sees it. */
  leader: string | null;
  leaseProblem: string | null;
  problem: ReportedDatabase['problem'];
}

export interface DatabaseReport {
  name: string;
  /** The nodes that report themselves leader of it (exactly one when healthy). */
  leaderNodes: string[];
  maxSeq: number;
  rows: StatusRow[];
}

export interface ClusterStatus {
  ok: boolean;
  nodes: NodeReport[];
  databases: DatabaseReport[];
  problems: string[];
}

export function registerStatusCommand(program: Command, context: CommandContext): void {
  const command = program
    .command('status')
    .summary("show every node's view of every database")
    .description(
      "fetch GET /status from every node and show, for each database, each node's role, epoch, seq, lag and leader; check that every database has exactly one leader that all nodes agree on",
    )
    .option(
      '--nodes <urls>',
      'comma-separated node URLs, e.g. http://10.0.0.1:7000,http://10.0.0.2:7000 (default: HADB_NODES, then "nodes" in the config file)',
    )
    .option(
      '--config <file>',
      'JSON config file (default: HADB_CONFIG, then ./hadb.json if present)',
    )
    .option(
      '--timeout <ms>',
      `how long to wait for each node (default: ${DEFAULT_STATUS_TIMEOUT_MS})`,
      positiveIntegerOption('--timeout', 600_000),
    )
    .option(
      '--json',
      'print { ok, nodes: [...], databases: [...], problems: [...] } as one JSON object',
    )
    .addHelpText(
      'after',
      [
        '',
        'Exit codes:',
        '  0  every node answered and every database has exactly one leader, agreed on by all nodes',
        '  1  a problem: a node unreachable, a database without a leader or with several, nodes',
        '     disagreeing on the leader, or a lease problem',
        '  2  bad usage or configuration (no nodes, a bad URL; nothing was done)',
        '',
        'Nodes are configured by --nodes, else HADB_NODES, else "nodes" in the config file (a',
        'comma-separated string or an array of URLs). A URL without a scheme gets http://.',
      ].join('\n'),
    );
  command.action((options: StatusOptionValues) =>
    runCommand(context, 'status', options.json === true, async () => {
      const urls = configuredNodes(context, options);
      const status = await clusterStatus(urls, options.timeout ?? DEFAULT_STATUS_TIMEOUT_MS);
      if (options.json) writeJson(context, status);
      else printStatus(context, status);
      return status.ok ? EXIT_OK : EXIT_FAILED;
    }),
  );
}

/** The node URLs from the flag, `HADB_NODES` or the config file, normalized and validated. */
function configuredNodes(context: CommandContext, options: StatusOptionValues): string[] {
  let raw: unknown = options.nodes;
  let origin = '--nodes';
  if (raw === undefined) {
    const flags = options.config === undefined ? {} : { config: options.config };
    const config = resolveConfig({ flags, env: context.env, cwd: context.cwd });
    const setting = config.others.find((other) => other.key === 'nodes');
    if (setting) {
      raw = setting.value;
      origin = setting.origin;
    }
  }
  let list: string[];
  if (raw === undefined) list = [];
  else if (typeof raw === 'string') list = raw.split(',');
  else if (Array.isArray(raw) && raw.every((item) => typeof item === 'string')) list = raw;
  else {
    throw new InvalidArgumentError(
      `${origin}: "nodes" must be a comma-separated string or an array of URLs`,
    );
  }
  const urls = [...new Set(list.map((item) => item.trim()).filter((item) => item !== ''))].map(
    (item) => normalizeNodeUrl(item, origin),
  );
  if (urls.length === 0) {
    throw new InvalidArgumentError(
      'no nodes given: pass --nodes <url,url,...>, set HADB_NODES, or put "nodes" in hadb.json',
    );
  }
  return [...new Set(urls)];
}

/** `host:port` → `http://host:port`; refuses anything that is not an http(s) URL. */
export function normalizeNodeUrl(text: string, origin = '--nodes'): string {
  const withScheme = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(text) ? text : `http://${text}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new InvalidArgumentError(
      `${origin}: ${JSON.stringify(redactUrl(text))} is not a valid URL`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new InvalidArgumentError(
      `${origin}: ${JSON.stringify(redactUrl(text))} must be an http:// or https:// URL`,
    );
  }
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    throw new InvalidArgumentError(
      `${origin}: ${JSON.stringify(redactUrl(text))} must be a plain node address (no query, fragment or credentials)`,
    );
  }
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** Fetches every node's status at once and checks the cluster's leadership. */
export async function clusterStatus(urls: string[], timeoutMs: number): Promise<ClusterStatus> {
  const nodes = await Promise.all(urls.map((url) => fetchNodeStatus(url, timeoutMs)));
  const problems: string[] = [];
  for (const report of nodes) {
    if (!report.ok) problems.push(`node ${report.url} unreachable: ${report.error}`);
  }

  const byName = new Map<string, { report: NodeReport; database: ReportedDatabase }[]>();
  for (const report of nodes) {
    for (const database of report.databases ?? []) {
      const entries = byName.get(database.name) ?? [];
      entries.push({ report, database });
      byName.set(database.name, entries);
    }
  }

  const databases: DatabaseReport[] = [];
  for (const name of [...byName.keys()].sort()) {
    const entries = byName.get(name) ?? [];
    const maxSeq = Math.max(...entries.map(({ database }) => database.seq));
    const rows: StatusRow[] = entries.map(({ report, database }) => ({
      node: report.node ?? report.url,
      url: report.url,
      role: database.role,
      epoch: database.epoch,
      seq: database.seq,
      lag: maxSeq - database.seq,
      caughtUp: database.caughtUp,
      leader: database.leader,
      leaseProblem: database.leaseProblem,
      problem: database.problem,
    }));
    const leaderNodes = rows.filter((row) => row.role === 'leader').map((row) => row.node);
    databases.push({ name, leaderNodes, maxSeq, rows });

    if (leaderNodes.length === 0) {
      problems.push(`database ${name}: no node reports itself leader`);
    } else if (leaderNodes.length > 1) {
      problems.push(
        `database ${name}: ${leaderNodes.length} nodes report themselves leader: ${leaderNodes.join(', ')}`,
      );
    }
    const seen = new Set(rows.map((row) => row.leader));
    const expected = leaderNodes.length === 1 ? leaderNodes[0] : undefined;
    if (seen.size > 1 || (expected !== undefined && !seen.has(expected))) {
      problems.push(
        `database ${name}: nodes disagree on the leader (${rows
          .map((row) => `${row.node} sees ${row.leader ?? 'none'}`)
          .join(', ')})`,
      );
    }
    for (const row of rows) {
      if (row.leaseProblem !== null) {
        problems.push(`database ${name}: lease problem on ${row.node}: ${row.leaseProblem}`);
      }
      if (row.problem !== null) {
        const { state, code, seq } = row.problem;
        problems.push(
          state === 'stuck'
            ? `database ${name}: ${row.node} cannot catch up: ${code} at seq ${seq}`
            : state === 'lease'
              ? `database ${name}: ${row.node} cannot use its lease record: ${code}`
              : `database ${name}: ${row.node} stopped it: ${code}`,
        );
      }
    }
  }

  return { ok: problems.length === 0, nodes, databases, problems };
}

async function fetchNodeStatus(url: string, timeoutMs: number): Promise<NodeReport> {
  let body: unknown;
  try {
    const response = await fetch(`${url}/status`, {
      signal: AbortSignal.timeout(timeoutMs),
      headers: { accept: 'application/json' },
    });
    if (!response.ok) {
      await response.body?.cancel();
      return { url, ok: false, error: `HTTP ${response.status} from ${url}/status` };
    }
    body = await response.json();
  } catch (error) {
    return { url, ok: false, error: describeFetchError(error, timeoutMs) };
  }
  const parsed = parseNodeStatus(body);
  if (parsed === null)
    return { url, ok: false, error: `${url}/status did not answer a node status` };
  return { url, ok: true, ...parsed };
}

function describeFetchError(error: unknown, timeoutMs: number): string {
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return `no answer within ${timeoutMs} ms`;
  }
  // fetch says "fetch failed" and puts the reason (ECONNREFUSED, ENOTFOUND, ...) in `cause`.
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code;
    return typeof code === 'string' && !cause.message.includes(code)
      ? `${code}: ${cause.message}`
      : cause.message;
  }
  return messageOf(error);
}

function parseNodeStatus(body: unknown): { node: string; databases: ReportedDatabase[] } | null {
  if (typeof body !== 'object' || body === null) return null;
  const { node, databases } = body as { node?: unknown; databases?: unknown };
  if (typeof node !== 'string' || !Array.isArray(databases)) return null;
  const parsed: ReportedDatabase[] = [];
  for (const item of databases) {
    if (typeof item !== 'object' || item === null) return null;
    const d = item as Record<string, unknown>;
    if (
      typeof d.name !== 'string' ||
      typeof d.role !== 'string' ||
      typeof d.epoch !== 'number' ||
      typeof d.seq !== 'number'
    ) {
      return null;
    }
    parsed.push({
      name: d.name,
      role: d.role,
      epoch: d.epoch,
      seq: d.seq,
      caughtUp: d.caughtUp === true,
      leader: typeof d.leader === 'string' ? d.leader : null,
      leaseProblem: typeof d.leaseProblem === 'string' ? d.leaseProblem : null,
      problem: problemOf(d.problem),
    });
  }
  return { node, databases: parsed };
}

function problemOf(value: unknown): ReportedDatabase['problem'] {
  if (typeof value !== 'object' || value === null) return null;
  const { state, code, seq, message } = value as Record<string, unknown>;
  if (typeof state !== 'string' || typeof code !== 'string') return null;
  return {
    state,
    code,
    seq: typeof seq === 'number' ? seq : 0,
    message: typeof message === 'string' ? message : '',
  };
}

function printStatus(context: CommandContext, status: ClusterStatus): void {
  const reachable = status.nodes.filter((node) => node.ok).length;
  if (status.databases.length === 0) {
    writeLine(context, `no databases open on the ${reachable} reachable node(s)`);
  } else {
    const header = ['DATABASE', 'NODE', 'ROLE', 'EPOCH', 'SEQ', 'LAG', 'LEADER', 'LEASE PROBLEM'];
    const numeric = new Set([3, 4, 5]);
    const rows = status.databases.flatMap((database) =>
      database.rows.map((row) => [
        database.name,
        row.node,
        row.role,
        String(row.epoch),
        String(row.seq),
        String(row.lag),
        row.leader ?? '-',
        row.leaseProblem ?? '-',
      ]),
    );
    const widths = header.map((title, column) =>
      Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
    );
    const format = (cells: string[]) =>
      cells
        .map((cell, column) =>
          numeric.has(column)
            ? cell.padStart(widths[column] ?? 0)
            : cell.padEnd(widths[column] ?? 0),
        )
        .join('  ')
        .trimEnd();
    writeLine(context, format(header));
    for (const row of rows) writeLine(context, format(row));
  }
  for (const node of status.nodes) {
    if (!node.ok) writeLine(context, `unreachable: ${node.url} (${node.error})`);
  }
  if (status.problems.length === 0) {
    writeLine(
      context,
      `ok: ${reachable} node(s), ${status.databases.length} database(s), one agreed leader each`,
    );
  } else {
    writeLine(context, `${status.problems.length} problem(s):`);
    for (const problem of status.problems) writeLine(context, `  ${problem}`);
  }
}
