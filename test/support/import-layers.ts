// The import graph of a source tree, and the layer rules checked against it. The rules themselves
// are in test/architecture/layers.test.ts; this module only reads imports and judges them.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

/** One import (static, dynamic or re-export) from one source file to another, as `src`-relative paths. */
export interface ImportEdge {
  from: string;
  to: string;
}

/** A layer's rule: which groups its files may import (besides their own group). */
export interface LayerRule {
  /** The group whose imports this rule checks, e.g. `wire` or `api-types.ts`. */
  layer: string;
  /** The only groups it may import; omit to allow every group except `forbidden`. */
  allowed?: readonly string[];
  forbidden?: readonly string[];
  why: string;
}

/** An import a rule forbids that the code still needs, kept on purpose until it can go. */
export interface AllowedException extends ImportEdge {
  why: string;
}

const SOURCE = /\.(ts|mts|mjs|js)$/;

/** Every relative import between the files under `root` (paths relative to `root`, `/`-separated). */
export function readImportGraph(root: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const file of sourceFiles(root)) {
    const text = fs.readFileSync(path.join(root, file), 'utf8');
    const { importedFiles } = ts.preProcessFile(text, true, true);
    for (const { fileName } of importedFiles) {
      if (!fileName.startsWith('.')) continue;
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(file), fileName));
      edges.push({ from: file, to });
    }
  }
  return edges;
}

function sourceFiles(root: string, dir = ''): string[] {
  const files: string[] = [];
  for (const entry of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
    const relative = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory()) files.push(...sourceFiles(root, relative));
    else if (SOURCE.test(entry.name) && !entry.name.endsWith('.d.ts')) files.push(relative);
  }
  return files.sort();
}

/** A file's group: its top folder under the root, or the file itself when it sits at the root. */
export function groupOf(file: string): string {
  return file.split('/')[0] ?? file;
}

const sameEdge = (a: ImportEdge, b: ImportEdge) => a.from === b.from && a.to === b.to;

/** Every import that breaks a rule and is not an allowed exception, one line each. */
export function layerViolations(
  edges: readonly ImportEdge[],
  rules: readonly LayerRule[],
  exceptions: readonly AllowedException[] = [],
): string[] {
  const violations: string[] = [];
  for (const edge of edges) {
    const from = groupOf(edge.from);
    const to = groupOf(edge.to);
    if (from === to || exceptions.some((allowed) => sameEdge(allowed, edge))) continue;
    for (const rule of rules) {
      if (rule.layer !== from) continue;
      const refused =
        (rule.allowed !== undefined && !rule.allowed.includes(to)) ||
        (rule.forbidden?.includes(to) ?? false);
      if (refused) violations.push(`${edge.from} imports ${edge.to}: ${rule.why}`);
    }
  }
  return violations;
}

/** Exceptions that match no import any more: they should leave the list. */
export function staleExceptions(
  edges: readonly ImportEdge[],
  exceptions: readonly AllowedException[],
): string[] {
  return exceptions
    .filter((allowed) => !edges.some((edge) => sameEdge(allowed, edge)))
    .map((allowed) => `${allowed.from} -> ${allowed.to}`);
}

/**
 * The cycles between groups, each as the groups in order (`wire -> actors -> wire`), with one
 * import that makes each step. Allowed exceptions do not count.
 */
export function groupCycles(
  edges: readonly ImportEdge[],
  exceptions: readonly AllowedException[] = [],
): string[] {
  const next = new Map<string, Map<string, ImportEdge>>();
  for (const edge of edges) {
    const from = groupOf(edge.from);
    const to = groupOf(edge.to);
    if (from === to || exceptions.some((allowed) => sameEdge(allowed, edge))) continue;
    let targets = next.get(from);
    if (!targets) {
      targets = new Map();
      next.set(from, targets);
    }
    if (!targets.has(to)) targets.set(to, edge);
  }
  // Tarjan's strongly connected components: a component of more than one group is a cycle.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[] = [];
  let counter = 0;
  const visit = (group: string): void => {
    index.set(group, counter);
    low.set(group, counter);
    counter++;
    stack.push(group);
    onStack.add(group);
    for (const target of next.get(group)?.keys() ?? []) {
      if (!index.has(target)) {
        visit(target);
        low.set(group, Math.min(low.get(group) as number, low.get(target) as number));
      } else if (onStack.has(target)) {
        low.set(group, Math.min(low.get(group) as number, index.get(target) as number));
      }
    }
    if (low.get(group) !== index.get(group)) return;
    const component: string[] = [];
    let member: string | undefined;
    do {
      member = stack.pop() as string;
      onStack.delete(member);
      component.push(member);
    } while (member !== group);
    if (component.length > 1) {
      component.sort();
      const members = new Set(component);
      const steps = component.flatMap((from) =>
        [...(next.get(from) ?? [])]
          .filter(([to]) => members.has(to))
          .map(([, edge]) => `${edge.from} -> ${edge.to}`),
      );
      cycles.push(`${component.join(' <-> ')} (${steps.join('; ')})`);
    }
  };
  for (const group of [...next.keys()].sort()) if (!index.has(group)) visit(group);
  return cycles;
}
