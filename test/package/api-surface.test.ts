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
        return { name: symbol.name, documented };
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

  it('lists what each entry point exports', () => {
    const names = Object.fromEntries(
      Object.entries(declared).map(([entry, list]) => [entry, list.map(({ name }) => name)]),
    );
    expect(names).toMatchInlineSnapshot(`
      {
        "hadb": [
          "BadRequestError",
          "BatchResult",
          "BeginOptions",
          "ByteRange",
          "CasResult",
          "CatchUpFailedError",
          "ChangesetError",
          "ChangesetErrorCode",
          "Clock",
          "ClosedError",
          "ClusterNodeView",
          "ClusterView",
          "Consistency",
          "createFsLeaseStore",
          "createFsStorage",
          "createNode",
          "DatabaseDivergedError",
          "DatabaseEvents",
          "DatabaseFailedError",
          "DatabaseProblem",
          "DatabaseStatus",
          "defaultLeaseTiming",
          "Durability",
          "ExecuteResult",
          "FencedError",
          "HadbDatabase",
          "HadbError",
          "HadbErrorCode",
          "HadbNode",
          "InteractiveTransaction",
          "InvalidArgumentError",
          "InvalidKeyError",
          "LeaderUnavailableError",
          "LeaseEntry",
          "LeaseRecordInvalidError",
          "LeaseStore",
          "LeaseStoreUnavailableError",
          "LeaseStoreUnsafeError",
          "LeaseTiming",
          "LeaseUrlConfig",
          "LimitExceededError",
          "LineageAheadError",
          "ListedObject",
          "ListOptions",
          "ListPage",
          "NodeOptions",
          "NodeStatus",
          "NotDurableError",
          "NotLeaderError",
          "openLeaseStoreFromUrl",
          "OpenLeaseStoreOptions",
          "OpenOptions",
          "openStorageFromUrl",
          "PacingChoice",
          "parseLeaseUrl",
          "parseStorageUrl",
          "ReadOptions",
          "ReplicationGapError",
          "ResultTooLargeError",
          "Role",
          "Row",
          "S3UrlConfig",
          "SnapshotInvalidError",
          "SqlError",
          "SqliteTooOldError",
          "SqlParams",
          "SqlValue",
          "Statement",
          "StatementResult",
          "StatementTimeoutError",
          "StorageBackend",
          "StorageNotFoundError",
          "StorageUnavailableError",
          "StorageUrlConfig",
          "StoreMismatchError",
          "systemClock",
          "TimeoutError",
          "Transaction",
          "TransactionExpiredError",
          "Transition",
          "UnauthorizedError",
          "UnknownDatabaseError",
          "WalInvalidError",
          "WriteOptions",
          "WriteToken",
        ],
        "hadb/nats": [
          "NatsLeaseStore",
          "NatsLeaseStoreOptions",
          "openNatsLeaseStore",
        ],
        "hadb/replication": [
          "applyRetention",
          "ChangesetCodec",
          "FollowerEvent",
          "FollowerOptions",
          "GENESIS_CHECKSUM",
          "LeaderEvent",
          "LeaderOptions",
          "listSnapshots",
          "ParkedTail",
          "planRetention",
          "Position",
          "readSnapshotManifest",
          "restoreDatabase",
          "RestoreOptions",
          "RestoreProgress",
          "RestoreResult",
          "RestoreTarget",
          "RetentionPlan",
          "salvageLeaderTail",
          "SnapshotManifest",
          "SqliteFollower",
          "SqliteLeader",
        ],
        "hadb/s3": [
          "createS3LeaseStore",
          "createS3Storage",
          "openS3LeaseStore",
          "S3ClientOptions",
          "S3LeaseStoreOptions",
          "S3StorageOptions",
        ],
        "hadb/testing": [
          "createMemoryLeaseStore",
          "createMemoryStorage",
          "CutOffMode",
          "DriftingClock",
          "EpochGrant",
          "FaultOptions",
          "Faults",
          "Latency",
          "LeaseWrite",
          "MemoryLeaseStore",
          "MemoryLeaseStoreOptions",
          "MemoryStorage",
          "runSimulation",
          "SimClock",
          "SimCluster",
          "SimClusterOptions",
          "SimNode",
          "SimulationOptions",
          "SimulationSummary",
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
    const values = Object.fromEntries(
      Object.entries(loaded).map(([entry, module]) => [entry, Object.keys(module).sort()]),
    );
    expect(values).toMatchInlineSnapshot(`
      {
        "hadb": [
          "BadRequestError",
          "CatchUpFailedError",
          "ChangesetError",
          "ClosedError",
          "DatabaseDivergedError",
          "DatabaseFailedError",
          "FencedError",
          "HadbError",
          "InvalidArgumentError",
          "InvalidKeyError",
          "LeaderUnavailableError",
          "LeaseRecordInvalidError",
          "LeaseStoreUnavailableError",
          "LeaseStoreUnsafeError",
          "LimitExceededError",
          "LineageAheadError",
          "NotDurableError",
          "NotLeaderError",
          "ReplicationGapError",
          "ResultTooLargeError",
          "SnapshotInvalidError",
          "SqlError",
          "SqliteTooOldError",
          "StatementTimeoutError",
          "StorageNotFoundError",
          "StorageUnavailableError",
          "StoreMismatchError",
          "TimeoutError",
          "TransactionExpiredError",
          "UnauthorizedError",
          "UnknownDatabaseError",
          "WalInvalidError",
          "createFsLeaseStore",
          "createFsStorage",
          "createNode",
          "defaultLeaseTiming",
          "openLeaseStoreFromUrl",
          "openStorageFromUrl",
          "parseLeaseUrl",
          "parseStorageUrl",
          "systemClock",
        ],
        "hadb/nats": [
          "openNatsLeaseStore",
        ],
        "hadb/replication": [
          "GENESIS_CHECKSUM",
          "SqliteFollower",
          "SqliteLeader",
          "applyRetention",
          "listSnapshots",
          "planRetention",
          "readSnapshotManifest",
          "restoreDatabase",
          "salvageLeaderTail",
        ],
        "hadb/s3": [
          "createS3LeaseStore",
          "createS3Storage",
          "openS3LeaseStore",
        ],
        "hadb/testing": [
          "DriftingClock",
          "Faults",
          "MemoryLeaseStore",
          "MemoryStorage",
          "SimClock",
          "SimCluster",
          "createMemoryLeaseStore",
          "createMemoryStorage",
          "runSimulation",
        ],
      }
    `);
  });

  it('documents every exported symbol', () => {
    const undocumented = Object.entries(declared).flatMap(([entry, list]) =>
      list.filter(({ documented }) => !documented).map(({ name }) => `${entry}: ${name}`),
    );
    expect(undocumented).toEqual([]);
  });
});
