// Imports point one way (wire <- machines <- adapters <- replication, actors, statements, http,
// hrana <- runtime <- sim, cli): a lower layer never imports a higher one, and no two folders
// import each other.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type AllowedException,
  groupCycles,
  type LayerRule,
  layerViolations,
  readImportGraph,
  staleExceptions,
} from '../support/import-layers.ts';

const SRC = path.resolve(import.meta.dirname, '../../src');

const RULES: readonly LayerRule[] = [
  {
    layer: 'api-types.ts',
    allowed: [],
    why: 'the public API types import nothing, so every layer may import them',
  },
  {
    layer: 'error-message.ts',
    allowed: [],
    why: 'the error-message helper imports nothing, so every layer may use it',
  },
  {
    layer: 'wire',
    allowed: ['errors.ts', 'api-types.ts', 'error-message.ts'],
    why: 'wire holds formats and the node protocol: errors and the public types only',
  },
  {
    layer: 'machines',
    allowed: ['wire', 'errors.ts', 'api-types.ts', 'error-message.ts'],
    why: 'the role machine is pure: wire, errors and the public types only',
  },
  {
    layer: 'adapters',
    forbidden: [
      'machines',
      'actors',
      'replication',
      'statements',
      'http',
      'hrana',
      'runtime',
      'sim',
      'cli',
    ],
    why: 'adapters (storage, leases) are I/O behind small interfaces: they know nothing above them',
  },
  {
    layer: 'replication',
    forbidden: ['machines', 'actors', 'statements', 'http', 'hrana', 'runtime', 'sim', 'cli'],
    why: 'the replication engine knows storage and formats, not who leads or who asks',
  },
  {
    layer: 'statements',
    forbidden: [
      'adapters',
      'machines',
      'actors',
      'replication',
      'http',
      'hrana',
      'runtime',
      'sim',
      'cli',
    ],
    why: 'client SQL (gate, statement processes) knows SQLite, not storage, leases or servers',
  },
  {
    layer: 'actors',
    forbidden: ['replication', 'statements', 'http', 'hrana', 'runtime', 'sim', 'cli'],
    why: 'the XState actors drive leases through the role machine; the runtime plugs in the rest',
  },
  {
    layer: 'http',
    allowed: ['wire', 'errors.ts', 'api-types.ts', 'error-message.ts'],
    why: 'the HTTP listener, node client, cluster view and status page serve what the runtime hands them',
  },
  {
    layer: 'hrana',
    forbidden: ['adapters', 'machines', 'actors', 'replication', 'runtime', 'sim', 'cli'],
    why: 'the Hrana server reaches databases through an interface the runtime implements',
  },
  {
    layer: 'runtime',
    forbidden: ['sim', 'cli'],
    why: 'the runtime wires the layers below; the CLI and the simulator use it, not the reverse',
  },
  {
    layer: 'sim',
    forbidden: ['runtime', 'cli'],
    why: 'the simulator drives the role machine and actors over in-memory adapters',
  },
];

/** Imports the rules forbid that the code still needs; each leaves when its reason does. */
const EXCEPTIONS: readonly AllowedException[] = [];

describe('import layers of src/', () => {
  const graph = readImportGraph(SRC);

  it('reads type-only, re-exported and dynamic imports of the real tree', () => {
    expect(graph).toContainEqual({ from: 'wire/forward.ts', to: 'api-types.ts' });
    expect(graph).toContainEqual({ from: 'index.ts', to: 'api-types.ts' });
    expect(graph.length).toBeGreaterThan(200);
  });

  it('has no import a layer rule forbids, beyond the listed exceptions', () => {
    expect(layerViolations(graph, RULES, EXCEPTIONS)).toEqual([]);
  });

  it('has no import cycle between folders', () => {
    expect(groupCycles(graph, EXCEPTIONS)).toEqual([]);
  });

  it('lists only exceptions the code still needs', () => {
    expect(staleExceptions(graph, EXCEPTIONS)).toEqual([]);
  });

  it('fails when a forbidden import is added to the real tree', () => {
    const added = [
      { from: 'adapters/metered.ts', to: 'runtime/metrics.ts' },
      { from: 'machines/role.ts', to: 'runtime/node.ts' },
      { from: 'http/cluster-view.ts', to: 'runtime/node.ts' },
      { from: 'api-types.ts', to: 'wire/forward.ts' },
    ];
    const violations = layerViolations([...graph, ...added], RULES, EXCEPTIONS);
    expect(violations.map((line) => line.split(':')[0])).toEqual([
      'adapters/metered.ts imports runtime/metrics.ts',
      'machines/role.ts imports runtime/node.ts',
      'http/cluster-view.ts imports runtime/node.ts',
      'api-types.ts imports wire/forward.ts',
    ]);
    const cycles = groupCycles([...graph, ...added], EXCEPTIONS);
    expect(cycles.some((cycle) => cycle.includes('http/cluster-view.ts -> runtime/node.ts'))).toBe(
      true,
    );
  });
});

describe('the import checker on a source tree written for it', () => {
  let root: string | null = null;

  afterEach(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
    root = null;
  });

  function tree(files: Record<string, string>): string {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-layers-'));
    for (const [file, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
      fs.writeFileSync(path.join(root, file), text);
    }
    return root;
  }

  it('finds a wire file importing the runtime, type-only or dynamic, and the cycle it makes', () => {
    const graph = readImportGraph(
      tree({
        'wire/format.ts': [
          "import type { Node } from '../actors/node.ts';",
          "export { errorOf } from '../errors.ts';",
          "export const later = () => import('../cli/main.ts');",
        ].join('\n'),
        'actors/node.ts': "import { errorOf } from '../wire/format.ts';\nexport type Node = 1;",
        'cli/main.ts': 'export {};',
        'errors.ts': 'export const errorOf = 1;',
      }),
    );
    expect(layerViolations(graph, RULES)).toEqual([
      `wire/format.ts imports actors/node.ts: ${RULES.find((rule) => rule.layer === 'wire')?.why}`,
      `wire/format.ts imports cli/main.ts: ${RULES.find((rule) => rule.layer === 'wire')?.why}`,
    ]);
    expect(groupCycles(graph)).toEqual([
      'actors <-> wire (actors/node.ts -> wire/format.ts; wire/format.ts -> actors/node.ts)',
    ]);
  });

  it('lets an allowed exception through and reports it once it is gone', () => {
    const graph = readImportGraph(
      tree({
        'wire/server.ts': "import { gate } from '../actors/gate.ts';",
        'actors/gate.ts': 'export const gate = 1;',
      }),
    );
    const exception = { from: 'wire/server.ts', to: 'actors/gate.ts', why: 'test' };
    expect(layerViolations(graph, RULES, [exception])).toEqual([]);
    expect(staleExceptions(graph, [exception])).toEqual([]);
    expect(staleExceptions([], [exception])).toEqual(['wire/server.ts -> actors/gate.ts']);
  });
});
