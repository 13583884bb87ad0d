import { randomUUID } from 'node:crypto';
import nodePath from 'node:path';
import pino, { type Logger } from 'pino';
import type { LeaseStore } from '../adapters/lease/types.ts';
import { assertValidDbName } from '../adapters/replication/snapshot.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import { type Clock, systemClock } from '../clock.ts';
import {
  BadRequestError,
  ClosedError,
  InvalidArgumentError,
  UnknownDatabaseError,
} from '../errors.ts';
import { assertValidTiming, defaultLeaseTiming, type LeaseTiming } from '../machines/role.ts';
import {
  type Durability,
  decodeForwardRequest,
  encodeMessage,
  FORWARD_PATH,
  type ForwardResponse,
  TAIL_PATH,
} from '../wire/forward.ts';
import {
  type HttpAnswer,
  msgpackAnswer,
  NodeClient,
  type NodeListener,
  startNodeListener,
} from '../wire/http.ts';
import type { DatabaseActor } from './database.ts';
import {
  type DatabaseStatus,
  type HadbDatabase,
  HostedDatabase,
  type NodeServices,
} from './hosted-database.ts';
import { MetricsRegistry } from './metrics.ts';
import { Supervisor, type SupervisorEvent } from './supervisor.ts';

export interface NodeOptions {
  /** This node's identity, stable across restarts (a hostname, a pod name). */
  id: string;
  storage: StorageBackend;
  leases: LeaseStore;
  /** Where this node keeps its local copies. */
  dataDir: string;
  /** Shared by every node of the cluster; node-to-node requests without it are refused. */
  secret: string;
  /** Where to listen for other nodes (default 127.0.0.1, a free port); `false` for no listener. */
  listen?: { host?: string; port?: number } | false;
  /** The address other nodes reach this one at (default: the listener's). */
  advertise?: string;
  /** Key prefix in storage ('' for none). */
  prefix?: string;
  logger?: Logger;
  timing?: Partial<LeaseTiming>;
  clock?: Clock;
  /** Default durability of writes (default `'replicated'`). */
  durability?: Durability;
  /** How often a leader ships what it did not ship already (default 100 ms). */
  shipIntervalMs?: number;
  /**
   * How soon a leader ships an `async` write (default 10 ms): coalesces bursts into one changeset,
   * so followers apply (and fsync) less often. The loss window of `async` writes grows with it.
   */
  shipDelayMs?: number;
  readYourWritesTimeoutMs?: number;
  forwardTimeoutMs?: number;
  /** Page size of new databases (default 4096). */
  pageSize?: number;
}

export interface OpenOptions {
  /** Idempotent SQL run (on the leader, as one batch) every time the database is opened. */
  schema?: string;
  /**
   * Ordered migrations: the leader applies those past the database's `user_version` in one
   * transaction and records the new version. Never edit one that has run; append.
   */
  migrations?: readonly string[];
  durability?: Durability;
  /** How long `open` waits for the local copy to be bootstrapped (default 60 s). */
  timeoutMs?: number;
}

/**
 * One node: one identity, one HTTP listener, many databases. Each database elects its own
 * leader, so different databases can be led by different nodes.
 *
 * @example
 * ```ts
 * const node = await createNode({
 *   id: 'app-1', secret: process.env.HADB_SECRET!, dataDir: '/var/lib/app/hadb',
 *   storage: createFsStorage({ root: '/mnt/shared/hadb' }),
 *   leases: createFsLeaseStore({ path: '/mnt/shared/hadb/leases.sqlite' }),
 * });
 * const db = await node.open('orders', { schema: 'create table if not exists o(id, total)' });
 * await db.execute('insert into o values (?, ?)', [1, 9.5]);
 * await node.close();
 * ```
 */
export interface HadbNode {
  readonly id: string;
  /** Where other nodes reach this one, if it listens. */
  readonly address: string | undefined;
  open(name: string, options?: OpenOptions): Promise<HadbDatabase>;
  /** The databases open on this node. */
  databases(): HadbDatabase[];
  /** Every database on this node: role, epoch, position, leader (also at `GET /status`). */
  status(): NodeStatus;
  /** Flushes, hands every lease over (released by CAS, so followers take over at once) and stops. */
  close(): Promise<void>;
}

export interface NodeStatus {
  node: string;
  address: string | null;
  databases: DatabaseStatus[];
}

export async function createNode(options: NodeOptions): Promise<HadbNode> {
  const node = new Node(options);
  await node.listen();
  return node;
}

class Node implements HadbNode {
  readonly id: string;
  readonly #options: NodeOptions;
  readonly #services: NodeServices;
  readonly #databases = new Map<string, HostedDatabase>();
  readonly #opening = new Map<string, Promise<HostedDatabase>>();
  readonly #supervisor: Supervisor<DatabaseActor>;
  #listener: NodeListener | undefined;
  readonly #metrics = new MetricsRegistry();
  readonly #forwardedRequests = this.#metrics.counter(
    'hadb_forwarded_requests_total',
    'Writes and reads other nodes forwarded to this one, by outcome',
  );
  readonly #roleChanges = this.#metrics.counter(
    'hadb_role_changes_total',
    'Role changes of the databases on this node, by the role entered',
  );
  #unwatch: (() => void) | undefined;
  #closed = false;

  constructor(options: NodeOptions) {
    if (!options.id || !/^[\w.-]{1,100}$/.test(options.id)) {
      throw new InvalidArgumentError(
        `node id must be 1..100 of [A-Za-z0-9_.-], got ${JSON.stringify(options.id)}`,
      );
    }
    if (!options.secret || options.secret.length < 16) {
      throw new InvalidArgumentError('the cluster secret must be at least 16 characters');
    }
    const timing = { ...defaultLeaseTiming, ...options.timing };
    assertValidTiming(timing);
    this.id = options.id;
    this.#options = options;
    const clock = options.clock ?? systemClock;
    const logger = (options.logger ?? defaultLogger()).child({ node: options.id });
    this.#services = {
      nodeId: options.id,
      session: randomUUID(),
      clock,
      storage: options.storage,
      leases: options.leases,
      prefix: options.prefix ?? '',
      dataDir: options.dataDir,
      parkDir: nodePath.join(options.dataDir, 'parked'),
      address: options.advertise,
      timing,
      client: new NodeClient(options.secret),
      logger,
      shipIntervalMs: options.shipIntervalMs ?? 100,
      shipDelayMs: options.shipDelayMs ?? 10,
      pageSize: options.pageSize ?? 4096,
    };
    this.#metrics.gauge('hadb_databases', 'Databases open on this node, by role', () => {
      const byRole = new Map<string, number>();
      for (const database of this.#databases.values()) {
        byRole.set(database.role, (byRole.get(database.role) ?? 0) + 1);
      }
      return [...byRole].map(([role, count]) => [{ role }, count]);
    });
    this.#supervisor = new Supervisor<DatabaseActor>({
      clock,
      onSnapshot: (name, snapshot) => this.#databases.get(name)?.onSnapshot(snapshot),
      onEvent: (event: SupervisorEvent) => {
        const level = event.type === 'restarted' ? 'info' : 'error';
        logger[level]({ event }, `database actor ${event.name}: ${event.type}`);
      },
    });
  }

  get address(): string | undefined {
    return this.#services.address;
  }

  async listen(): Promise<void> {
    // A store that can watch tells followers of a release or a new holder at once; one watcher
    // for the whole node, whatever the number of databases.
    this.#unwatch = this.#options.leases.watch?.('', (key) =>
      this.#databases.get(key)?.leaseChanged(),
    );
    const listen = this.#options.listen;
    if (listen === false) return;
    this.#listener = await startNodeListener({
      host: listen?.host ?? '127.0.0.1',
      port: listen?.port ?? 0,
      secret: this.#options.secret,
      routes: {
        [FORWARD_PATH]: {
          method: 'POST',
          authenticated: true,
          handle: ({ body }) => this.#forwarded(body),
        },
        [TAIL_PATH]: { method: 'GET', authenticated: true, handle: ({ url }) => this.#tail(url) },
        '/health': {
          method: 'GET',
          authenticated: false,
          handle: async () => ({ status: 200, body: 'ok' }),
        },
        // Read-only views for operators and scrapers, on the node's own (by default loopback) address.
        '/status': {
          method: 'GET',
          authenticated: false,
          handle: async () => ({
            status: 200,
            body: JSON.stringify(this.status()),
            contentType: 'application/json',
          }),
        },
        '/metrics': {
          method: 'GET',
          authenticated: false,
          handle: async () => ({
            status: 200,
            body: this.#metrics.render(),
            contentType: 'text/plain; version=0.0.4; charset=utf-8',
          }),
        },
      },
    });
    this.#services.address ??= this.#listener.address;
  }

  async open(name: string, options: OpenOptions = {}): Promise<HadbDatabase> {
    if (this.#closed) throw new ClosedError(`node ${this.id}`);
    assertValidDbName(name);
    const existing = this.#databases.get(name);
    if (existing) return existing;
    const opening = this.#opening.get(name);
    if (opening) return opening;
    const promise = this.#open(name, options).finally(() => this.#opening.delete(name));
    this.#opening.set(name, promise);
    return promise;
  }

  async #open(name: string, options: OpenOptions): Promise<HostedDatabase> {
    const database = new HostedDatabase(
      name,
      this.#services,
      {
        durability: options.durability ?? this.#options.durability ?? 'replicated',
        readYourWritesTimeoutMs: this.#options.readYourWritesTimeoutMs ?? 1000,
        forwardTimeoutMs: this.#options.forwardTimeoutMs ?? 15_000,
      },
      () => this.#closeDatabase(name),
    );
    database.on('role', ({ role }) => this.#roleChanges.inc({ role }));
    this.#databases.set(name, database);
    this.#supervisor.start(name, () => database.createActor());
    database.start();
    try {
      await database.ready(options.timeoutMs ?? 60_000);
      if (options.schema) await database.batch([{ sql: options.schema }]);
      if (options.migrations?.length) await this.#migrate(database, options.migrations);
    } catch (error) {
      await this.#closeDatabase(name);
      throw error;
    }
    return database;
  }

  /** Migrations past `user_version`, as one atomic batch on the leader. */
  async #migrate(database: HostedDatabase, migrations: readonly string[]): Promise<void> {
    const version = Number(
      (await database.get('pragma user_version', undefined, { consistency: 'strong' }))
        ?.user_version ?? 0,
    );
    if (version > migrations.length) {
      throw new InvalidArgumentError(
        `${database.name} is at schema version ${version}, newer than the ${migrations.length} migrations given`,
      );
    }
    if (version === migrations.length) return;
    // The guard statement fails the whole batch if another node migrated in the meantime.
    await database.batch([
      {
        sql: `select case when (select user_version from pragma_user_version) = ${version} then 1 else raise(abort, 'schema version moved') end`,
      },
      ...migrations.slice(version).map((sql) => ({ sql })),
      { sql: `pragma user_version = ${migrations.length}` },
    ]);
  }

  status(): NodeStatus {
    return {
      node: this.id,
      address: this.address ?? null,
      databases: [...this.#databases.values()].map((database) => database.status()),
    };
  }

  databases(): HadbDatabase[] {
    return [...this.#databases.values()];
  }

  async #closeDatabase(name: string): Promise<void> {
    const database = this.#databases.get(name);
    if (!database) return;
    await this.#supervisor.stop(name);
    this.#databases.delete(name);
    await database.closeFiles();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled([...this.#opening.values()]);
    await Promise.all([...this.#databases.keys()].map((name) => this.#closeDatabase(name)));
    this.#unwatch?.();
    await this.#listener?.close();
    this.#services.client.close();
  }

  async #forwarded(body: Uint8Array): Promise<HttpAnswer> {
    const request = decodeForwardRequest(body);
    const database = this.#databases.get(request.db);
    if (!database) {
      return answer(
        {
          ok: false,
          code: 'UNKNOWN_DATABASE',
          message: new UnknownDatabaseError(request.db).message,
        },
        404,
      );
    }
    const response = await database.serveWrite(request);
    this.#forwardedRequests.inc({
      op: request.op,
      outcome: response.ok ? 'ok' : response.code.toLowerCase(),
    });
    if (response.ok) return answer(response, 200);
    const status = response.code === 'SQL_ERROR' ? 422 : response.code === 'INTERNAL' ? 503 : 409;
    return answer(response, status);
  }

  async #tail(url: URL): Promise<HttpAnswer> {
    const db = url.searchParams.get('db') ?? '';
    const after = Number(url.searchParams.get('after'));
    if (!Number.isSafeInteger(after) || after < 0)
      throw new BadRequestError('after must be a sequence number');
    const database = this.#databases.get(db);
    if (!database) {
      return { status: 404, body: new UnknownDatabaseError(db).message };
    }
    return msgpackAnswer(encodeMessage(await database.waitForShipped(after)));
  }
}

function answer(response: ForwardResponse, status: number): HttpAnswer {
  return msgpackAnswer(encodeMessage(response), status);
}

function defaultLogger(): Logger {
  return pino({ level: process.env.HADB_LOG_LEVEL ?? 'warn' }, pino.destination(2));
}
