// The public surface is what `hadb` and its subpaths (package.json `exports`) export: a change to it
// shows as a diff of the snapshots below. Every exported symbol carries TSDoc.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ENTRIES = {
  hadb: 'src/index.ts',
  'hadb/replication': 'src/replication.ts',
  'hadb/testing': 'src/testing.ts',
  'hadb/s3': 'src/s3.ts',
  'hadb/nats': 'src/nats.ts',
} as const;

const root = path.resolve(import.meta.dirname, '../..');

interface DeclaredExport {
  name: string;
  documented: boolean;
  /** A value (function, class, constant), present at run time; otherwise a type only. */
  value: boolean;
}

/** Every export of each entry as the type checker sees it, values and types alike. */
function declaredExports(): Record<string, DeclaredExport[]> {
  const files = Object.values(ENTRIES).map((file) => path.join(root, file));
  const parsed = ts.getParsedCommandLineOfConfigFile(
    path.join(root, 'tsconfig.build.json'),
    {},
    { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} },
  );
  const program = ts.createProgram(files, { ...parsed?.options, noEmit: true });
  const checker = program.getTypeChecker();
  const result: Record<string, DeclaredExport[]> = {};
  for (const [entry, file] of Object.entries(ENTRIES)) {
    const source = program.getSourceFile(path.join(root, file));
    const module = source && checker.getSymbolAtLocation(source);
    if (!module) throw new Error(`no module symbol for ${file}`);
    result[entry] = checker
      .getExportsOfModule(module)
      .map((symbol) => {
        const target =
          symbol.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(symbol) : symbol;
        const documented = target.getDocumentationComment(checker).length > 0;
        const specifier = symbol.declarations?.find(ts.isExportSpecifier);
        const typeOnly = specifier?.isTypeOnly || specifier?.parent.parent.isTypeOnly;
        const value = !typeOnly && (target.flags & ts.SymbolFlags.Value) !== 0;
        return { name: symbol.name, documented, value };
      })
      .sort((a, b) => a.name.localeCompare(b.name));
  }
  return result;
}

describe('public API surface', () => {
  const declared = declaredExports();

  it('covers every entry point package.json exports', () => {
    const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
    const subpaths = Object.keys(manifest.exports).filter((key) => key !== './package.json');
    expect(subpaths.map((key) => key.replace(/^\./, 'hadb')).sort()).toEqual(
      Object.keys(ENTRIES).sort(),
    );
  });

  it('lists what each entry point exports, values and types', () => {
    const names = Object.fromEntries(
      Object.entries(declared).map(([entry, list]) => [
        entry,
        list.map(({ name, value }) => (value ? name : `type ${name}`)),
      ]),
    );
    expect(names).toMatchInlineSnapshot(`
      {
        "hadb": [
          "BadRequestError",
          "type BatchResult",
          "type BeginOptions",
          "type ByteRange",
          "type CasResult",
          "CatchUpFailedError",
          "ChangesetError",
          "type ChangesetErrorCode",
          "type Clock",
          "ClosedError",
          "type ClusterNodeView",
          "type ClusterView",
          "type Consistency",
          "createFsLeaseStore",
          "createFsStorage",
          "createNode",
          "DatabaseDivergedError",
          "type DatabaseEvents",
          "DatabaseFailedError",
          "type DatabaseProblem",
          "type DatabaseStatus",
          "defaultLeaseTiming",
          "type Durability",
          "type ExecuteResult",
          "FencedError",
          "type HadbDatabase",
          "HadbError",
          "type HadbErrorCode",
          "type HadbNode",
          "type InteractiveTransaction",
          "InvalidArgumentError",
          "InvalidKeyError",
          "type IsolatedTransaction",
          "LeaderUnavailableError",
          "type LeaseEntry",
          "LeaseRecordInvalidError",
          "type LeaseStore",
          "LeaseStoreUnavailableError",
          "LeaseStoreUnsafeError",
          "type LeaseTiming",
          "type LeaseUrlConfig",
          "LimitExceededError",
          "LineageAheadError",
          "type ListedObject",
          "type ListOptions",
          "type ListPage",
          "type NodeOptions",
          "type NodeStatus",
          "NotDurableError",
          "NotLeaderError",
          "openLeaseStoreFromUrl",
          "type OpenLeaseStoreOptions",
          "type OpenOptions",
          "openStorageFromUrl",
          "type OpenTransaction",
          "type PacingChoice",
          "parseLeaseUrl",
          "parseStorageUrl",
          "type ReadOptions",
          "ReplicationGapError",
          "type RequestCount",
          "type RequestCounts",
          "type RequestOutcome",
          "ResultTooLargeError",
          "type Role",
          "type Row",
          "type S3UrlConfig",
          "SnapshotInvalidError",
          "SqlError",
          "SqliteTooOldError",
          "type SqlParams",
          "type SqlValue",
          "type Statement",
          "type StatementResult",
          "StatementTimeoutError",
          "type StorageBackend",
          "StorageNotFoundError",
          "StorageUnavailableError",
          "type StorageUrlConfig",
          "StoreMismatchError",
          "systemClock",
          "TimeoutError",
          "type Transaction",
          "TransactionExpiredError",
          "type Transition",
          "UnauthorizedError",
          "UnknownDatabaseError",
          "WalInvalidError",
          "type WriteOptions",
          "type WriteToken",
        ],
        "hadb/nats": [
          "type NatsLeaseStore",
          "type NatsLeaseStoreOptions",
          "openNatsLeaseStore",
        ],
        "hadb/replication": [
          "applyRetention",
          "type ChangesetCodec",
          "type FollowerEvent",
          "type FollowerOptions",
          "GENESIS_CHECKSUM",
          "type LeaderEvent",
          "type LeaderOptions",
          "listSnapshots",
          "type ParkedTail",
          "planRetention",
          "type Position",
          "readSnapshotManifest",
          "restoreDatabase",
          "type RestoreOptions",
          "type RestoreProgress",
          "type RestoreResult",
          "type RestoreTarget",
          "type RetentionPlan",
          "salvageLeaderTail",
          "type SnapshotManifest",
          "SqliteFollower",
          "SqliteLeader",
        ],
        "hadb/s3": [
          "createS3LeaseStore",
          "createS3Storage",
          "openS3LeaseStore",
          "type S3ClientOptions",
          "type S3LeaseStoreOptions",
          "type S3StorageOptions",
        ],
        "hadb/testing": [
          "createMemoryLeaseStore",
          "createMemoryStorage",
          "type CutOffMode",
          "DriftingClock",
          "type EpochGrant",
          "type FaultOptions",
          "Faults",
          "type Latency",
          "type LeaseWrite",
          "MemoryLeaseStore",
          "type MemoryLeaseStoreOptions",
          "MemoryStorage",
          "runSimulation",
          "SimClock",
          "SimCluster",
          "type SimClusterOptions",
          "type SimNode",
          "type SimulationOptions",
          "type SimulationSummary",
        ],
      }
    `);
  });

  it('exports at run time exactly the values the declarations name', async () => {
    const loaded = {
      hadb: await import('hadb'),
      'hadb/replication': await import('hadb/replication'),
      'hadb/testing': await import('hadb/testing'),
      'hadb/s3': await import('hadb/s3'),
      'hadb/nats': await import('hadb/nats'),
    };
    const runtime = Object.fromEntries(
      Object.entries(loaded).map(([entry, module]) => [entry, Object.keys(module).sort()]),
    );
    const values = Object.fromEntries(
      Object.entries(declared).map(([entry, list]) => [
        entry,
        list
          .filter(({ value }) => value)
          .map(({ name }) => name)
          .sort(),
      ]),
    );
    expect(runtime).toEqual(values);
  });

  it('documents every exported symbol', () => {
    const undocumented = Object.entries(declared).flatMap(([entry, list]) =>
      list.filter(({ documented }) => !documented).map(({ name }) => `${entry}: ${name}`),
    );
    expect(undocumented).toEqual([]);
  });
});
