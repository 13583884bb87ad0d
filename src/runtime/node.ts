import { randomUUID } from 'node:crypto';
import nodePath from 'node:path';
import type { Logger } from 'pino';
import type { DatabaseActor, DatabaseActorOptions } from '../actors/database.ts';
import { NODE_KEY_PREFIX, NodeLiveness, OwnershipCache } from '../actors/node-liveness.ts';
import { Supervisor, type SupervisorEvent } from '../actors/supervisor.ts';
import { TransitionLog } from '../actors/transitions.ts';
import type { LeaseStore } from '../adapters/lease/types.ts';
import {
  choosePacer,
  countsOf,
  meterLeaseStore,
  meterStorage,
  type PacingChoice,
  type RequestCounts,
  sharedLeasePacer,
} from '../adapters/metered.ts';
import { sharedStoragePacer } from '../adapters/pacing.ts';
import type { StorageBackend } from '../adapters/storage/types.ts';
import type { Durability, HadbDatabase, NodeStatus, Transition } from '../api-types.ts';
import { type Clock, systemClock } from '../clock.ts';
import {
  FORWARD_TIMEOUT_MS,
  HIBERNATE_AFTER_MS,
  MAX_OPEN_DATABASES,
  OPEN_TIMEOUT_MS,
  PAGE_CACHE_BYTES,
  PAGE_SIZE,
  READ_YOUR_WRITES_TIMEOUT_MS,
  SHIP_DELAY_MS,
  SHIP_INTERVAL_MS,
} from '../defaults.ts';
import {
  ClosedError,
  httpStatusOf,
  InvalidArgumentError,
  UnknownDatabaseError,
} from '../errors.ts';
import { assertServableDbName } from '../hrana/routes.ts';
import { gatherCluster, PeerSet, provenStatus } from '../http/cluster-view.ts';
import {
  type HttpAnswer,
  msgpackAnswer,
  type NodeListener,
  type NodeListenerOptions,
  startNodeListener,
} from '../http/listener.ts';
import { NodeClient } from '../http/node-client.ts';
import { renderStatusPage } from '../http/status-page.ts';
import { defaultLogger } from '../log.ts';
import { assertValidTiming, defaultLeaseTiming, type LeaseTiming } from '../machines/role.ts';
import { assertValidDbName } from '../replication/snapshot.ts';
import { StatementRunner, type StatementRunnerOptions } from '../statements/statement-runner.ts';
import {
  decodeForwardRequest,
  encodeMessage,
  type ForwardResponse,
  forwardAnswerStatus,
} from '../wire/forward.ts';
import {
  COPIES_PATH,
  decodeNodeTailQuery,
  decodeTailQuery,
  FORWARD_PATH,
  NODE_TAIL_PATH,
  PEER_STATUS_PATH,
  TAIL_PATH,
} from '../wire/node-protocol.ts';
import { type BalanceOptions, Balancer, MEMBERS_KEY } from './balancer.ts';
import { bindStores } from './cluster-identity.ts';
import { HandleCache, sweepIntervalMs } from './handle-cache.ts';
import { HostedDatabase, type NodeServices } from './hosted-database.ts';
import { MetricsRegistry } from './metrics.ts';
import { openNodeStores } from './node-stores.ts';
import { NODE_TAIL_WAIT_MS, NodeTailFollower, ShipLog } from './node-tail.ts';
import { StepLimiter } from './step-limiter.ts';

/** Options of `createNode`: identity, storage, leases, local data and tuning. */
export interface NodeOptions {
  /** This node's identity, stable across restarts (a hostname, a pod name). */
  id: string;
  /**
   * Where the databases live: a backend, or a URL as the CLI takes it (`file:///path`,
   * `s3://bucket/prefix?endpoint=…&region=…`, `memory:`). A URL holds no credentials: S3 takes
   * them from the AWS environment. A store opened from a URL is closed by `close()`.
   */
  storage: StorageBackend | string;
  /**
   * The lease store: an instance, or a URL (`file:///path` for a lease file in that folder, or
   * the `.sqlite` file itself; `nats://host:4222?bucket=leases`; `s3://…`; `memory:`). A store
   * opened from a URL is closed by `close()`.
   */
  leases: LeaseStore | string;
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
  /**
   * Storage (at `prefix`) and the lease store are bound by a cluster identity written in both.
   * A node refuses to start when one of them has an identity and the other none (a mistyped path
   * or prefix, typically) with {@link StoreMismatchError}; `true` writes it into the store that
   * lacks it: pass it once, when a new store is meant. Two stores of different clusters are
   * refused either way. Both new: the identity is created without asking.
   */
  init?: boolean;
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
  /**
   * An interactive transaction (`begin()`, Hrana's BEGIN) is rolled back this long after it
   * began, however active (default 60 s); its next call fails with `TransactionExpiredError`.
   */
  transactionLifetimeMs?: number;
  /** Page size of new databases (default 4096). */
  pageSize?: number;
  /**
   * `'node'`: one liveness record per node, renewed by one CAS per interval whatever the number
   * of databases; each database's ownership record is written only on claim and release.
   * `'database'`: one lease per database, each renewed on its own. Every node of a cluster must
   * use the same scope.
   */
  leaseScope?: 'node' | 'database';
  /**
   * Under node-level leases: spread leaders evenly (±10%) across the live nodes, moving them by
   * graceful handoff (default off; `true` for the default settings). Every node of a cluster
   * should use the same setting. Ignored under per-database leases.
   */
  balance?: BalanceOptions | boolean;
  /**
   * A database with no read, write or apply for this long closes its SQLite handles until the
   * next one (default 30 s; `false` never).
   */
  hibernateAfterMs?: number | false;
  /** Databases with open handles at most; the least recently used closes first (default 256). */
  maxOpenDatabases?: number | false;
  /** SQLite page cache of all open databases together (default 256 MiB). */
  pageCacheBytes?: number;
  /** More routes on the node's listener (`hadb serve` relays Hrana streams to the leader). */
  routes?: NodeListenerOptions['routes'];
  /**
   * Every role transition of every database, appended to `file` as JSON lines and passed to
   * `onTransition`. The last 50 are in `status()` either way.
   */
  transitions?: { file?: string; onTransition?: (transition: Transition) => void };
  /** Other nodes' addresses for the cluster view (`GET /`); more are learned from leases and tails. */
  peers?: readonly string[];
  /** Inspect the role actors of these databases only (e.g. `createWebSocketInspector().inspect`). */
  inspect?: {
    databases: readonly string[];
    observer: NonNullable<DatabaseActorOptions['inspect']>;
  };
  /**
   * How storage and lease-store requests wait their turn. By default every node of the process
   * shares one storage pacer (64 in flight, 2000/s) and one lease pacer (64 in flight): leases
   * apart, so a renewal never queues behind an upload. Ignored for a store already metered
   * (`meterStorage`, `meterLeaseStore`): it keeps its pacer, and its counts are those of every
   * node that shares it.
   */
  pacing?: { storage?: PacingChoice; leases?: PacingChoice };
  /** The `backend` label of request counts (default: memory and nats are told, others `custom`). */
  backendKinds?: { storage?: string; leases?: string };
  /**
   * Reads from the network doors (Hrana, reads forwarded to the leader, and `isolated` reads)
   * run in child processes with these limits: time per request (default 5 s, then
   * `StatementTimeoutError`), rows per response (default 64 MiB, then `ResultTooLargeError`),
   * processes (default 2).
   */
  statements?: StatementRunnerOptions;
}

/** Options of `node.open`: schema and migrations run on the leader. */
export interface OpenOptions {
  /**
   * Idempotent SQL (one or several statements) run on the leader in one transaction every time
   * the database is opened, before `migrations`.
   */
  schema?: string;
  /**
   * Ordered migrations, each one or several statements (no BEGIN/COMMIT: they run in hadb's
   * transaction). The leader applies those past the database's `user_version` in one transaction
   * and records the new version there, so nodes opening at once apply each migration once. A
   * database at a higher version than migrations given is refused (InvalidArgumentError). Never
   * edit one that has run; append.
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
  /** Storage and lease-store requests this node made, by backend, operation and outcome. */
  requestCounts(): RequestCounts;
  /** Flushes, hands every lease over (released by CAS, so followers take over at once) and stops. */
  close(): Promise<void>;
}

const DEFAULT_LEASE_SCOPE = 'database';

/**
 * Heavy role-change steps (a new leader's epoch-start record and files, a stopped leader's file
 * turned back into a copy) run at once per node: enough that their fsyncs keep the disk busy
 * while claims still hold the event loop, few enough that the loop turns between them.
 */
const ROLE_STEPS_AT_ONCE = 64;

/**
 * Databases told of a node-wide event per turn of the event loop: small turns, so the file I/O of
 * takeovers already claimed goes on between them instead of waiting for all the claims.
 */
const BROADCAST_BATCH = 32;

/** How long `/cluster` waits for each peer's `/status`. */
const PEER_STATUS_TIMEOUT_MS = 800;

/** Starts a node: joins the cluster in `storage`/`leases` and serves the databases it opens. */
export async function createNode(options: NodeOptions): Promise<HadbNode> {
  const stores = await openNodeStores(options);
  let node: Node;
  try {
    const { storage, leases, backendKinds } = stores;
    node = new Node({ ...options, storage, leases, backendKinds }, stores.close);
  } catch (error) {
    await stores.close();
    throw error;
  }
  try {
    // Before any lease is touched: leadership in the wrong lease store splits the cluster.
    await node.bindStores();
  } catch (error) {
    await node.close();
    throw error;
  }
  await node.listen();
  return node;
}

/** The options with both stores opened. */
type NodeOptionsWithStores = NodeOptions & { storage: StorageBackend; leases: LeaseStore };

class Node implements HadbNode {
  readonly id: string;
  readonly #options: NodeOptionsWithStores;
  /** Closes the stores opened from URLs. */
  readonly #closeStores: () => Promise<void>;
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
  readonly #storageRequests = this.#metrics.counter(
    'hadb_storage_requests_total',
    'Requests to object storage, by backend, operation and outcome',
  );
  readonly #leaseRequests = this.#metrics.counter(
    'hadb_lease_requests_total',
    'Requests to the lease store, by backend, operation and outcome',
  );
  readonly #problemsBegun = this.#metrics.counter(
    'hadb_database_problems_total',
    'Databases on this node that became stuck behind storage or failed, by state and error code',
  );
  readonly #settingResets = this.#metrics.counter(
    'hadb_leader_setting_resets_total',
    "Settings of a leader's connection (journal_mode, wal_autocheckpoint, …) found changed and set back, by pragma",
  );
  readonly #detachMeters: (() => void)[];
  #unwatch: (() => void) | undefined;
  #closed = false;
  #nodeTail: NodeTailFollower | undefined;
  readonly #nodeTailClosing = new AbortController();
  readonly #handles: HandleCache;
  readonly #transitions: TransitionLog;
  readonly #peers = new PeerSet();
  #balancer: Balancer | undefined;

  constructor(options: NodeOptionsWithStores, closeStores: () => Promise<void>) {
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
    this.#closeStores = closeStores;
    // Counted and paced by default; a store the caller metered already is not wrapped again.
    const storage = meterStorage(options.storage, {
      kind: options.backendKinds?.storage,
      pacer: choosePacer(options.pacing?.storage, sharedStoragePacer),
    });
    const leases = meterLeaseStore(options.leases, {
      kind: options.backendKinds?.leases,
      pacer: choosePacer(options.pacing?.leases, sharedLeasePacer),
    });
    this.#detachMeters = [
      storage.attach(this.#storageRequests),
      leases.attach(this.#leaseRequests),
    ];
    this.#options = { ...options, storage, leases };
    const clock = options.clock ?? systemClock;
    const logger = (options.logger ?? defaultLogger()).child({ node: options.id });
    const hibernateAfterMs = options.hibernateAfterMs ?? HIBERNATE_AFTER_MS;
    const maxOpen = options.maxOpenDatabases ?? MAX_OPEN_DATABASES;
    this.#handles = new HandleCache({ clock, hibernateAfterMs, maxOpen });
    if (hibernateAfterMs !== false) this.#handles.start(sweepIntervalMs(hibernateAfterMs));
    this.#services = {
      nodeId: options.id,
      session: randomUUID(),
      clock,
      storage,
      leases,
      prefix: options.prefix ?? '',
      dataDir: options.dataDir,
      parkDir: nodePath.join(options.dataDir, 'parked'),
      address: options.advertise,
      timing,
      client: new NodeClient(options.secret),
      logger,
      shipIntervalMs: options.shipIntervalMs ?? SHIP_INTERVAL_MS,
      shipDelayMs: options.shipDelayMs ?? SHIP_DELAY_MS,
      pageSize: options.pageSize ?? PAGE_SIZE,
      handles: this.#handles,
      steps: new StepLimiter(ROLE_STEPS_AT_ONCE),
      pageCacheKiB: pageCacheKiB(options.pageCacheBytes ?? PAGE_CACHE_BYTES, maxOpen),
      runner: new StatementRunner(options.statements),
    };
    const inspect = options.inspect;
    if (inspect) {
      this.#services.inspect = (db) =>
        inspect.databases.includes(db) ? inspect.observer : undefined;
    }
    this.#transitions = new TransitionLog({
      file: options.transitions?.file,
      onTransition: options.transitions?.onTransition,
      onError: (error) => logger.error({ err: error }, 'could not record a role transition'),
    });
    for (const peer of options.peers ?? []) this.#peers.add(peer);
    this.#metrics.gauge('hadb_databases', 'Databases open on this node, by role', () => {
      const byRole = new Map<string, number>();
      for (const database of this.#databases.values()) {
        byRole.set(database.role, (byRole.get(database.role) ?? 0) + 1);
      }
      return [...byRole].map(([role, count]) => [{ role }, count]);
    });
    this.#metrics.gauge(
      'hadb_database_problems',
      'Databases on this node that cannot catch up with storage (stuck) or whose actor stopped (failed), by state and error code',
      () => {
        const byKind = new Map<string, [{ state: string; code: string }, number]>();
        for (const database of this.#databases.values()) {
          const problem = database.problem;
          if (!problem) continue;
          const key = `${problem.state} ${problem.code}`;
          const entry = byKind.get(key) ?? [{ state: problem.state, code: problem.code }, 0];
          entry[1] += 1;
          byKind.set(key, entry);
        }
        return byKind.values();
      },
    );
    this.#supervisor = new Supervisor<DatabaseActor>({
      clock,
      onSnapshot: (name, snapshot) => this.#databases.get(name)?.onSnapshot(snapshot),
      onEvent: (event: SupervisorEvent) => {
        const level = event.type === 'restarted' ? 'info' : 'error';
        logger[level]({ event }, `database actor ${event.name}: ${event.type}`);
        // Out of restarts: that database is reported failed; the node serves the others.
        if (event.type === 'gave-up') {
          this.#databases.get(event.name)?.actorFailed(event.error, event.crashes);
        }
      },
    });
  }

  get address(): string | undefined {
    return this.#services.address;
  }

  async bindStores(): Promise<void> {
    await bindStores({
      storage: this.#services.storage,
      prefix: this.#services.prefix,
      leases: this.#services.leases,
      init: this.#options.init ?? false,
      logger: this.#services.logger,
    });
  }

  async listen(): Promise<void> {
    // A store that can watch tells followers of a release or a new holder at once; one watcher
    // for the whole node, whatever the number of databases.
    this.#unwatch = this.#options.leases.watch?.('', (key) => {
      if (key.startsWith(NODE_KEY_PREFIX)) this.#services.nodeLeases?.liveness.keyChanged(key);
      else if (key === MEMBERS_KEY) this.#balancer?.membersChanged();
      else this.#databases.get(key)?.leaseChanged();
    });
    const listen = this.#options.listen;
    if (listen === false) {
      this.#startNodeLeases();
      return;
    }
    this.#listener = await startNodeListener({
      host: listen?.host ?? '127.0.0.1',
      port: listen?.port ?? 0,
      secret: this.#options.secret,
      routes: {
        ...this.#options.routes,
        [FORWARD_PATH]: {
          method: 'POST',
          authenticated: true,
          handle: ({ body }) => this.#forwarded(body),
        },
        [TAIL_PATH]: { method: 'GET', authenticated: true, handle: ({ url }) => this.#tail(url) },
        [COPIES_PATH]: {
          method: 'POST',
          authenticated: true,
          handle: async ({ body }) =>
            this.#balancer?.answerCopies(body) ?? { status: 404, body: 'not balancing' },
        },
        [NODE_TAIL_PATH]: {
          method: 'GET',
          authenticated: true,
          handle: ({ url }) => this.#nodeTailAnswer(url),
        },
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
        // This node's status, proven to come from a holder of the cluster secret (cluster-view.ts).
        [PEER_STATUS_PATH]: {
          method: 'GET',
          authenticated: false,
          handle: async ({ url }) => provenStatus(this.status(), this.#options.secret, url),
        },
        // The cluster as this node sees it, and a page that shows it; read-only, no secrets.
        '/cluster': {
          method: 'GET',
          authenticated: false,
          handle: async () => ({
            status: 200,
            body: JSON.stringify(
              await gatherCluster(
                this.status(),
                this.#peers,
                PEER_STATUS_TIMEOUT_MS,
                this.#options.secret,
              ),
            ),
            contentType: 'application/json',
          }),
        },
        '/': {
          method: 'GET',
          authenticated: false,
          handle: async () => ({
            status: 200,
            body: renderStatusPage(this.id),
            contentType: 'text/html; charset=utf-8',
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
    this.#startNodeLeases();
  }

  #leaseStatus(): NodeStatus['lease'] {
    const liveness = this.#services.nodeLeases?.liveness;
    if (!liveness) return { scope: 'database', validForMs: null };
    const left = liveness.validUntil - this.#services.clock.now();
    return { scope: 'node', validForMs: left > 0 ? Math.round(left) : 0 };
  }

  /** Node-level leases: one liveness record for the node, renewed for all its databases. */
  #startNodeLeases(): void {
    if ((this.#options.leaseScope ?? DEFAULT_LEASE_SCOPE) !== 'node') return;
    const each = (fn: (database: HostedDatabase) => void) => this.#broadcast(fn);
    let balancer: Balancer | undefined;
    const liveness = new NodeLiveness({
      store: this.#options.leases,
      clock: this.#services.clock,
      nodeId: this.id,
      session: this.#services.session,
      address: this.#services.address,
      timing: this.#services.timing,
      logger: this.#services.logger,
      onLapse: (reason) => each((database) => database.nodeLeaseLapsed(reason)),
      onHeld: () => each((database) => database.holderChanged()),
      onPeerChanged: (peer, released) =>
        each((database) => {
          if (database.observedHolder !== peer) return;
          if (released) database.leaseChanged();
          else database.holderChanged();
        }),
      leaders: () => {
        let count = 0;
        for (const database of this.#databases.values()) if (database.role === 'leader') count++;
        return count;
      },
    });
    const balance = this.#options.balance ?? false;
    if (balance !== false) {
      const timing = this.#services.timing;
      balancer = new Balancer({
        nodeId: this.id,
        store: this.#options.leases,
        clock: this.#services.clock,
        logger: this.#services.logger,
        liveness,
        databases: () => this.#databases.values(),
        lookup: (name) => this.#databases.get(name),
        client: this.#services.client,
        callTimeoutMs: Math.max(1000, timing.renewIntervalMs),
        defaultClaimDelayMs: timing.pollIntervalMs + timing.renewIntervalMs,
        options: balance === true ? {} : balance,
      });
      this.#balancer = balancer;
    }
    this.#services.nodeLeases = {
      liveness,
      ownership: new OwnershipCache(),
      claimDelayMs: balancer && ((holder) => balancer.claimDelayMs(holder)),
    };
    this.#services.shipLog = new ShipLog(this.#services.session);
    this.#nodeTail = new NodeTailFollower({
      client: this.#services.client,
      clock: this.#services.clock,
      logger: this.#services.logger,
      self: () => this.#services.address,
      databases: () => this.#databases.values(),
      lookup: (name) => this.#databases.get(name),
      intervalMs: this.#services.timing.pollIntervalMs,
    });
    liveness.start();
    balancer?.start();
    this.#services.nodeTail = this.#nodeTail;
    this.#nodeTail.start();
  }

  /**
   * Tells every database of something node-wide (the node's lease lapsed or is held again, a peer
   * changed), in order, a batch per turn of the event loop: each database's role actor runs a
   * transition, and thousands at once would hold everything else up for seconds. Commits do not
   * wait for this: the write gate checks the node's lease itself.
   */
  #broadcast(fn: (database: HostedDatabase) => void): void {
    this.#broadcasts.push({ fn, targets: [...this.#databases.values()], next: 0 });
    if (this.#broadcasts.length === 1) this.#drainBroadcasts();
  }

  readonly #broadcasts: {
    fn: (database: HostedDatabase) => void;
    targets: HostedDatabase[];
    next: number;
  }[] = [];

  #drainBroadcasts(): void {
    let budget = BROADCAST_BATCH;
    while (budget > 0) {
      const job = this.#broadcasts[0];
      if (!job) return;
      while (job.next < job.targets.length && budget > 0) {
        const database = job.targets[job.next++] as HostedDatabase;
        budget--;
        try {
          job.fn(database);
        } catch (error) {
          this.#services.logger.error({ err: error, db: database.name }, 'node-wide event failed');
        }
      }
      if (job.next >= job.targets.length) this.#broadcasts.shift();
    }
    if (this.#broadcasts.length > 0) setImmediate(() => this.#drainBroadcasts());
  }

  /** The leader side of the node tail: changes of every database this node leads. */
  async #nodeTailAnswer(url: URL): Promise<HttpAnswer> {
    const shipLog = this.#services.shipLog;
    if (!shipLog) return { status: 404, body: 'this node uses per-database leases' };
    const { after, session, from } = decodeNodeTailQuery(url.searchParams);
    this.#peers.add(from);
    const answer = await shipLog.wait(
      after,
      session,
      this.#services.clock,
      NODE_TAIL_WAIT_MS,
      this.#nodeTailClosing.signal,
    );
    return msgpackAnswer(encodeMessage(answer));
  }

  async open(name: string, options: OpenOptions = {}): Promise<HadbDatabase> {
    if (this.#closed) throw new ClosedError(`node ${this.id}`);
    assertValidDbName(name);
    assertServableDbName(name);
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
        readYourWritesTimeoutMs:
          this.#options.readYourWritesTimeoutMs ?? READ_YOUR_WRITES_TIMEOUT_MS,
        forwardTimeoutMs: this.#options.forwardTimeoutMs ?? FORWARD_TIMEOUT_MS,
        transactionLifetimeMs: this.#options.transactionLifetimeMs,
      },
      () => this.#closeDatabase(name),
    );
    database.on('role', ({ role }) => this.#roleChanges.inc({ role }));
    database.on('setting-reset', ({ pragma }) => this.#settingResets.inc({ pragma }));
    database.on('transition', (transition) => this.#transitions.record(transition));
    database.on('health', (problem) => {
      if (problem) this.#problemsBegun.inc({ state: problem.state, code: problem.code });
    });
    this.#databases.set(name, database);
    this.#supervisor.start(name, () => database.createActor());
    database.start();
    try {
      await database.bootstrapped(options.timeoutMs ?? OPEN_TIMEOUT_MS);
      if (options.schema) await database.runScripts('schema', [options.schema]);
      if (options.migrations?.length) await this.#migrate(database, options.migrations);
    } catch (error) {
      await this.#closeDatabase(name);
      throw error;
    }
    return database;
  }

  /**
   * The leader applies the migrations past its `user_version` in one transaction, judging the
   * version in it (refusing a newer one). A database already there costs one read, no write.
   */
  async #migrate(database: HostedDatabase, migrations: readonly string[]): Promise<void> {
    const version = Number(
      (await database.get('pragma user_version', undefined, { consistency: 'strong' }))
        ?.user_version ?? 0,
    );
    if (version === migrations.length) return;
    await database.runScripts('migrate', migrations);
  }

  status(): NodeStatus {
    return {
      node: this.id,
      address: this.address ?? null,
      databases: [...this.#databases.values()].map((database) => database.status()),
      transitions: this.#transitions.recent(),
      lease: this.#leaseStatus(),
      peers: this.#peers.list().filter((peer) => peer !== this.address),
    };
  }

  databases(): HadbDatabase[] {
    return [...this.#databases.values()];
  }

  requestCounts(): RequestCounts {
    return { storage: countsOf(this.#storageRequests), lease: countsOf(this.#leaseRequests) };
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
    // No more handoffs: closing hands every lease over anyway.
    this.#balancer?.close();
    this.#handles.stop();
    await Promise.allSettled([...this.#opening.values()]);
    await Promise.all([...this.#databases.keys()].map((name) => this.#closeDatabase(name)));
    this.#nodeTail?.close();
    this.#nodeTailClosing.abort();
    await this.#services.nodeLeases?.liveness.close();
    this.#unwatch?.();
    for (const detach of this.#detachMeters) detach();
    await this.#listener?.close();
    this.#services.client.close();
    this.#services.runner?.close();
    this.#transitions.close();
    await this.#closeStores();
  }

  async #forwarded(body: Uint8Array): Promise<HttpAnswer> {
    const request = decodeForwardRequest(body);
    const database = this.#databases.get(request.db);
    if (!database) {
      return answer({
        ok: false,
        code: 'UNKNOWN_DATABASE',
        message: new UnknownDatabaseError(request.db).message,
      });
    }
    const response = await database.serveWrite(request);
    this.#forwardedRequests.inc({
      op: request.op,
      outcome: response.ok ? 'ok' : response.code.toLowerCase(),
    });
    return answer(response);
  }

  async #tail(url: URL): Promise<HttpAnswer> {
    const { db, after, from } = decodeTailQuery(url.searchParams);
    // A follower says where it is: the cluster view shows it (the request is authenticated).
    this.#peers.add(from);
    const database = this.#databases.get(db);
    if (!database) {
      return {
        status: httpStatusOf('UNKNOWN_DATABASE'),
        body: new UnknownDatabaseError(db).message,
      };
    }
    return msgpackAnswer(encodeMessage(await database.waitForShipped(after)));
  }
}

/** Each connection's share of the page cache budget; a leader's checkpointer takes 64 KiB more. */
function pageCacheKiB(budgetBytes: number, maxOpen: number | false): number | undefined {
  if (!(budgetBytes > 0)) {
    throw new InvalidArgumentError(`pageCacheBytes must be > 0, got ${budgetBytes}`);
  }
  if (maxOpen === false) return undefined;
  return Math.max(64, Math.floor(budgetBytes / 1024 / maxOpen) - 64);
}

function answer(response: ForwardResponse): HttpAnswer {
  return msgpackAnswer(encodeMessage(response), forwardAnswerStatus(response));
}
