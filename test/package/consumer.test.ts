// Installs the package the way a user does (`npm pack`, then `npm install <tarball>` in a fresh
// app outside the repository) and uses it from plain JavaScript, from TypeScript and through
// `npx hadb`. Nothing here reads the repository's sources: only what the tarball ships.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = path.resolve(import.meta.dirname, '../..');
const fixtures = path.join(import.meta.dirname, 'fixtures/consumer');
const SECRET = 'consumer-test-cluster-secret';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** npm's own variables from an enclosing `npm test` would point the inner npm at the repo. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(
      ([key]) => !/^npm_/i.test(key) || /^npm_config_(cache|registry|userconfig)$/i.test(key),
    ),
  );
  return { ...env, ...extra };
}

function run(
  command: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      command,
      args,
      {
        cwd: options.cwd,
        env: options.env ?? cleanEnv(),
        timeout: options.timeoutMs,
        maxBuffer: 64 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/**
 * better-sqlite3's install script downloads a prebuilt binary from GitHub or compiles one (about
 * 2.5 minutes on a 2-core VM without GitHub access). The repository's node_modules holds the
 * binary of the same version, built for this Node: offered as a local prebuild, the install
 * script unpacks it instead. Another version or platform falls back to download or compile.
 */
async function localPrebuilds(dir: string): Promise<Record<string, string>> {
  const module = path.join(repo, 'node_modules/better-sqlite3');
  const binary = 'build/Release/better_sqlite3.node';
  if (!existsSync(path.join(module, binary))) return {};
  const { version } = JSON.parse(readFileSync(path.join(module, 'package.json'), 'utf8'));
  const { platform, arch } = process;
  const name = `better-sqlite3-v${version}-node-v${process.versions.modules}-${platform}-${arch}`;
  await mkdir(dir, { recursive: true });
  const tar = await run('tar', ['czf', path.join(dir, `${name}.tar.gz`), binary], {
    cwd: module,
    timeoutMs: 30_000,
  });
  if (tar.code !== 0) return {};
  return { npm_config_better_sqlite3_local_prebuilds: dir };
}

/** The ```ts blocks of the README, in order. */
function readmeTypeScriptBlocks(): string[] {
  const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
  return [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1] ?? '');
}

async function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(
      () => reject(new Error(`no output in ${timeoutMs} ms: ${err}`)),
      timeoutMs,
    );
    child.stderr?.on('data', (chunk) => {
      err += chunk;
    });
    child.stdout?.on('data', (chunk) => {
      out += chunk;
      const end = out.indexOf('\n');
      if (end < 0) return;
      clearTimeout(timer);
      resolve(out.slice(0, end));
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${code} before any output: ${err}`));
    });
  });
}

describe('the packed package, installed into a fresh app', () => {
  let tmp: string;
  let app: string;
  let install: Run;
  let readmeFiles: string[];

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'hadb-consumer-'));
    app = path.join(tmp, 'app');
    await mkdir(app);
    const pack = await run('npm', ['pack', '--json', '--pack-destination', tmp], {
      cwd: repo,
      timeoutMs: 120_000,
    });
    expect(pack.code, pack.stderr).toBe(0);
    const [{ filename }] = JSON.parse(pack.stdout) as [{ filename: string }];

    await writeFile(
      path.join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', private: true, type: 'module' }),
    );
    const typesNode = JSON.parse(
      readFileSync(path.join(repo, 'node_modules/@types/node/package.json'), 'utf8'),
    ).version;
    const prebuilds = await localPrebuilds(path.join(tmp, 'prebuilds'));
    install = await run(
      'npm',
      [
        'install',
        path.join(tmp, filename),
        `@types/node@${typesNode}`,
        '--prefer-offline',
        '--no-audit',
        '--no-fund',
      ],
      { cwd: app, env: cleanEnv(prebuilds), timeoutMs: 240_000 },
    );
    expect(install.code, install.stderr).toBe(0);

    for (const file of ['orders.mjs', 'uses-api.ts']) {
      await copyFile(path.join(fixtures, file), path.join(app, file));
    }
    readmeFiles = readmeTypeScriptBlocks().map((_, index) => `readme-${index + 1}.ts`);
    await Promise.all(
      readmeTypeScriptBlocks().map((block, index) =>
        writeFile(path.join(app, `readme-${index + 1}.ts`), block),
      ),
    );
  }, 360_000);

  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('installs on this Node without an engine warning', () => {
    expect(`${install.stdout}${install.stderr}`).not.toMatch(/EBADENGINE|unsupported engine/i);
  });

  it('runs the README example from plain JavaScript: a write on one node is read on another', async () => {
    const shared = path.join(tmp, 'shared');
    const env = cleanEnv({ SHARED_DIR: shared, HADB_SECRET: SECRET });
    const writer = spawn(process.execPath, ['orders.mjs', 'app-1', 'write'], {
      cwd: app,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => writer.on('exit', resolve));
    try {
      const written = JSON.parse(await firstLine(writer, 60_000));
      expect(written).toEqual({ node: 'app-1', role: 'leader', rows: [{ id: 1, total: 9.5 }] });

      const reader = await run(process.execPath, ['orders.mjs', 'app-2', 'read'], {
        cwd: app,
        env,
        timeoutMs: 60_000,
      });
      expect(reader.code, reader.stderr).toBe(0);
      expect(JSON.parse(reader.stdout)).toEqual({
        node: 'app-2',
        role: 'follower',
        rows: [{ id: 1, total: 9.5 }],
      });
    } finally {
      writer.stdin.end();
    }
    expect(await exited).toBe(0);
  }, 120_000);

  it.each([
    ['node16', { module: 'node16', moduleResolution: 'node16' }],
    ['bundler', { module: 'esnext', moduleResolution: 'bundler' }],
  ])(
    'type-checks an app and the README code blocks under moduleResolution %s, strict, without skipLibCheck',
    async (name, resolution) => {
      const tsconfig = `tsconfig.${name}.json`;
      await writeFile(
        path.join(app, tsconfig),
        JSON.stringify({
          compilerOptions: {
            ...resolution,
            target: 'es2022',
            strict: true,
            skipLibCheck: false,
            noEmit: true,
            types: ['node'],
          },
          files: ['uses-api.ts', ...readmeFiles],
        }),
      );
      const tsc = path.join(repo, 'node_modules/typescript/bin/tsc');
      const result = await run(process.execPath, [tsc, '-p', tsconfig], {
        cwd: app,
        timeoutMs: 120_000,
      });
      expect({ code: result.code, errors: result.stdout }).toEqual({ code: 0, errors: '' });
    },
    120_000,
  );

  it('runs the CLI from the installed package: npx hadb --version, --help and demo', async () => {
    const version = await run('npx', ['--no', '--', 'hadb', '--version'], {
      cwd: app,
      timeoutMs: 30_000,
    });
    expect(version.code, version.stderr).toBe(0);
    const manifest = JSON.parse(
      await readFile(path.join(app, 'node_modules/hadb/package.json'), 'utf8'),
    );
    expect(version.stdout.trim()).toBe(manifest.version);

    const help = await run('npx', ['--no', '--', 'hadb', '--help'], {
      cwd: app,
      timeoutMs: 30_000,
    });
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^Usage: hadb /);

    const demo = await run('npx', ['--no', '--', 'hadb', 'demo', '--json', '--seconds', '4'], {
      cwd: app,
      timeoutMs: 90_000,
    });
    expect(demo.code, demo.stderr).toBe(0);
    expect(JSON.parse(demo.stdout)).toMatchObject({ ok: true, converged: true, violations: [] });
  }, 120_000);

  it('ships compiled JavaScript, declarations, the LICENSE and no TypeScript sources', async () => {
    const installed = path.join(app, 'node_modules/hadb');
    const manifest = JSON.parse(await readFile(path.join(installed, 'package.json'), 'utf8'));
    expect(Object.keys(manifest.dependencies)).not.toContain('tsx');
    expect(existsSync(path.join(installed, 'src'))).toBe(false);
    expect(existsSync(path.join(installed, 'dist/index.js'))).toBe(true);
    expect(existsSync(path.join(installed, 'dist/index.d.ts'))).toBe(true);
    expect(readFileSync(path.join(installed, 'LICENSE'), 'utf8')).toMatch(/Apache License/);
  });
});
