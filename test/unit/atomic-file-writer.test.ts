import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/** Every open, fsync and rename the writer makes, by path, in order. */
const steps: string[] = [];
const openPaths = new Map<number, string>();

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const named = (p: fs.PathLike) => path.basename(String(p));
  const wrapped = {
    ...real,
    openSync: (file: fs.PathLike, ...rest: unknown[]) => {
      const fd = (real.openSync as (...args: unknown[]) => number)(file, ...rest);
      openPaths.set(fd, named(file));
      return fd;
    },
    fsyncSync: (fd: number) => {
      steps.push(`fsync ${openPaths.get(fd)}`);
      real.fsyncSync(fd);
    },
    renameSync: (from: fs.PathLike, to: fs.PathLike) => {
      steps.push(`rename ${named(from).replace(/\.tmp-.*/, '.tmp-*')} ${named(to)}`);
      real.renameSync(from, to);
    },
    open: (file: fs.PathLike, ...rest: unknown[]) => {
      const done = rest.pop() as (error: Error | null, fd?: number) => void;
      (real.open as (...args: unknown[]) => void)(
        file,
        ...rest,
        (error: Error | null, fd: number) => {
          if (!error) openPaths.set(fd, named(file));
          done(error, fd);
        },
      );
    },
    fsync: (fd: number, done: (error: Error | null) => void) => {
      steps.push(`fsync ${openPaths.get(fd)}`);
      real.fsync(fd, done);
    },
    rename: (from: fs.PathLike, to: fs.PathLike, done: (error: Error | null) => void) => {
      steps.push(`rename ${named(from).replace(/\.tmp-.*/, '.tmp-*')} ${named(to)}`);
      real.rename(from, to, done);
    },
  };
  return { ...wrapped, default: wrapped };
});

const { writeFileAtomic, writeFileAtomicSync, syncDirectory, syncDirectorySync } = await import(
  '../../src/adapters/fs-sync.ts'
);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-atomic-'));
  steps.length = 0;
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

const directorySynced = () => `fsync ${path.basename(dir)}`;

describe.each([
  ['writeFileAtomicSync', async (file: string, data: string) => writeFileAtomicSync(file, data)],
  ['writeFileAtomic', (file: string, data: string) => writeFileAtomic(file, data)],
])('%s', (_name, write) => {
  it('writes a temporary file, fsyncs it, renames it over the file, then fsyncs the directory', async () => {
    const file = path.join(dir, 'state.json');
    fs.writeFileSync(file, 'old');
    await write(file, 'new content');
    expect(fs.readFileSync(file, 'utf8')).toBe('new content');
    const temp = steps[0]?.slice('fsync '.length) ?? '';
    expect(temp).toMatch(/^state\.json\.tmp-\d+-\w+$/);
    expect(steps).toEqual([
      `fsync ${temp}`,
      'rename state.json.tmp-* state.json',
      directorySynced(),
    ]);
    expect(fs.readdirSync(dir)).toEqual(['state.json']);
  });

  it('leaves the old content and no temporary file when the rename fails', async () => {
    const target = path.join(dir, 'taken');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'inside'), 'x');
    await expect(write(target, 'data')).rejects.toThrow();
    expect(fs.readdirSync(dir)).toEqual(['taken']);
    expect(steps).not.toContain(directorySynced());
  });
});

describe('writeFileAtomicSync options', () => {
  it('uses the given temporary name and file mode', () => {
    const file = path.join(dir, 'db-hadb-redo');
    writeFileAtomicSync(file, new Uint8Array([1, 2, 3]), { temp: `${file}.tmp`, mode: 0o600 });
    expect([...fs.readFileSync(file)]).toEqual([1, 2, 3]);
    expect(steps).toEqual([
      'fsync db-hadb-redo.tmp',
      'rename db-hadb-redo.tmp db-hadb-redo',
      directorySynced(),
    ]);
    if (process.platform !== 'win32') expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });
});

describe('syncDirectory', () => {
  it('fsyncs the directory itself, in both forms', async () => {
    syncDirectorySync(dir);
    await syncDirectory(dir);
    expect(steps).toEqual([directorySynced(), directorySynced()]);
  });
});
