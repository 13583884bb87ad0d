import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as errors from '../../src/errors.ts';

const SRC = path.resolve(import.meta.dirname, '../../src');

/**
 * Errors src/ may still construct that are not hadb's classes, each with why. Keyed by file and
 * text found in the line, so a new one beside them still fails.
 */
const ALLOWED: { file: string; line: string; why: string }[] = [
  {
    file: 'statements/statement-runner-child.mjs',
    line: 'class TooLarge extends Error {}',
    why: 'a plain Node child process (no TypeScript loader): its failures cross to the parent as data and are rebuilt there as HadbErrors',
  },
  {
    file: 'statements/statement-runner-child.mjs',
    line: 'new Error(`a read may not write: ',
    why: 'as above',
  },
  {
    file: 'http/status-page.ts',
    line: "if (!response.ok) throw new Error('HTTP ' + response.status);",
    why: "the status page's script, run by the browser, caught on the next line of that script",
  },
  {
    file: 'cli/commands/shared.ts',
    line: 'must be an integer in 0..',
    why: "commander's own error for an option parser: commander reports it as a usage error",
  },
  {
    file: 'cli/commands/shared.ts',
    line: 'must be an integer in 1..',
    why: 'as above',
  },
  {
    file: 'cli/commands/restore.ts',
    line: 'new CommanderArgumentError(',
    why: 'as above',
  },
];

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return /\.(ts|mts|mjs|js|cjs)$/.test(entry.name) ? [full] : [];
  });
}

/** hadb's error classes: every class errors.ts exports that is an Error. */
const hadbClasses = new Set(
  Object.entries(errors)
    .filter(([, value]) => typeof value === 'function' && value.prototype instanceof Error)
    .map(([name]) => name),
);
hadbClasses.add('HadbError');

interface Finding {
  file: string;
  line: string;
  what: string;
}

function findings(): Finding[] {
  const found: Finding[] = [];
  for (const full of sourceFiles(SRC)) {
    const file = path.relative(SRC, full).split(path.sep).join('/');
    const inErrors = file === 'errors.ts';
    const text = fs.readFileSync(full, 'utf8');
    // Names a file gives hadb's classes (`InvalidArgumentError as BadOptionError`).
    const known = new Set(hadbClasses);
    for (const [, names] of text.matchAll(/import \{([^}]*)\} from '[./]*errors\.ts'/g)) {
      for (const [, original, alias] of (names as string).matchAll(/(\w+) as (\w+)/g)) {
        if (hadbClasses.has(original as string)) known.add(alias as string);
      }
    }
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line.startsWith('//') || line.startsWith('*') || line.startsWith('/**')) continue;
      const add = (what: string) => found.push({ file, line, what });
      for (const match of line.matchAll(/\bnew ((?:[A-Z][A-Za-z0-9]*)?Error)\(/g)) {
        const name = match[1] as string;
        if (name === 'HadbError' && !inErrors) add('new HadbError( outside errors.ts');
        else if (!known.has(name)) add(`new ${name}( (not a hadb error class)`);
      }
      if (/\bextends Error\b/.test(line) && !inErrors) add('extends Error outside errors.ts');
      if (/\bextends [A-Za-z]*Error\b/.test(line) && !inErrors)
        add('an error class outside errors.ts');
      if (/\bthrow new Error\b/.test(line)) add('throw new Error');
    }
  }
  return found;
}

describe('errors total', () => {
  it('src builds no error outside hadb classes, and defines every error class in errors.ts', () => {
    const unexpected = findings().filter(
      (finding) =>
        !ALLOWED.some(
          (allowed) => allowed.file === finding.file && finding.line.includes(allowed.line),
        ),
    );
    expect(unexpected).toEqual([]);
  });

  it('the allow-list names only lines that exist (none stale)', () => {
    const found = findings();
    const stale = ALLOWED.filter(
      (allowed) => !found.some((f) => f.file === allowed.file && f.line.includes(allowed.line)),
    );
    expect(stale).toEqual([]);
  });
});
