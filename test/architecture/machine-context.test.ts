// Only src/machines reads a role snapshot's context: the runtime, the actors and the simulator ask
// the selectors (src/machines/selectors.ts), so the machine may change how it keeps what it knows.
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '../../src');

/** Each `x.context` read, and each `{ context } = x` destructuring, in one file's code. */
function contextReads(file: string, text: string): string[] {
  if (!text.includes('context')) return [];
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  const reads: string[] = [];
  const at = (node: ts.Node) =>
    `${file}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${node.getText()}`;
  const visit = (node: ts.Node) => {
    if (ts.isPropertyAccessExpression(node) && node.name.text === 'context') reads.push(at(node));
    if (ts.isElementAccessExpression(node) && ts.isStringLiteral(node.argumentExpression)) {
      if (node.argumentExpression.text === 'context') reads.push(at(node));
    }
    if (
      ts.isVariableDeclaration(node) &&
      ts.isObjectBindingPattern(node.name) &&
      node.name.elements.some(
        (element) => (element.propertyName ?? element.name).getText() === 'context',
      )
    ) {
      reads.push(at(node));
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return reads;
}

function sourceFiles(dir = ''): string[] {
  return fs.readdirSync(path.join(SRC, dir), { withFileTypes: true }).flatMap((entry) => {
    const relative = dir ? `${dir}/${entry.name}` : entry.name;
    if (entry.isDirectory()) return sourceFiles(relative);
    return entry.name.endsWith('.ts') ? [relative] : [];
  });
}

function readsOutsideMachines(extra: Record<string, string> = {}): string[] {
  const files = sourceFiles().filter((file) => !file.startsWith('machines/'));
  const texts = new Map(files.map((file) => [file, fs.readFileSync(path.join(SRC, file), 'utf8')]));
  for (const [file, text] of Object.entries(extra)) texts.set(file, text);
  return [...texts].flatMap(([file, text]) => contextReads(file, text));
}

describe('role machine context', () => {
  it('is read only in src/machines', () => {
    expect(readsOutsideMachines()).toEqual([]);
  });

  it('is found when code outside src/machines reads it', () => {
    const runtime = fs.readFileSync(path.join(SRC, 'runtime/hosted-database.ts'), 'utf8');
    const reads = readsOutsideMachines({
      'runtime/hosted-database.ts': `${runtime}\nexport const held = (s: { context: object }) => s.context;\n`,
      'sim/extra.ts': [
        'export function epochs(snapshot: { context: { lease: null } }) {',
        '  const { context } = snapshot;',
        "  return [context, snapshot['context']];",
        '}',
      ].join('\n'),
    });
    expect(reads.map((read) => read.replace(/:\d+:/, ':'))).toEqual([
      'runtime/hosted-database.ts: s.context',
      'sim/extra.ts: { context } = snapshot',
      "sim/extra.ts: snapshot['context']",
    ]);
  });
});
