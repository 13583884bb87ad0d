import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { redactSetting, redactUrl } from '../../src/redact.ts';
import { type CliRun, hadb } from './support/cli.ts';

// Whatever the CLI prints of a URL or a setting, passwords, secrets and fragments are not in it.

const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-redaction-'));
afterAll(() => fs.rmSync(cwd, { recursive: true, force: true }));

const SECRET_WORD = 'Hunter2Secret';

function printed(run: CliRun): string {
  return `${run.stdout}\n${run.stderr}`;
}

describe('redaction of what the CLI prints', () => {
  it('hadb status does not echo the password or fragment of a node URL', async () => {
    const runs = await Promise.all(
      [
        `http://u:${SECRET_WORD}@127.0.0.1:1`,
        `u:${SECRET_WORD}@127.0.0.1:1`,
        `http://127.0.0.1:1/#${SECRET_WORD}`,
      ].map((nodes) => hadb(['status', '--nodes', nodes], { cwd })),
    );
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(printed(run)).not.toContain(SECRET_WORD);
      expect(run.stderr).toContain('***');
    }
  });

  it('hadb explain hides HADB_CLUSTER_PASS and URL fragments', async () => {
    const run = await hadb(['explain', '--json', '--storage', `file:///tmp/x#${SECRET_WORD}`], {
      cwd,
      env: { HADB_CLUSTER_PASS: SECRET_WORD, HADB_PEER: `http://p:${SECRET_WORD}@h:1/#x` },
    });
    expect(run.code).toBe(2);
    expect(printed(run)).not.toContain(SECRET_WORD);
    const shown = JSON.parse(run.stdout) as {
      others: { key: string; value: unknown }[];
      problems: string[];
    };
    expect(shown.others).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ key: 'clusterPass', value: '***' }),
        expect.objectContaining({ key: 'peer', value: 'http://***@h:1/#***' }),
      ]),
    );
    expect(shown.problems.join('\n')).toContain('#***');
  });

  it('a refused option value is not echoed with its credentials', async () => {
    const run = await hadb(
      [
        'serve',
        ...['--id', 'n', '--data', path.join(cwd, 'n'), '--db', 'app', '--no-auth'],
        ...['--storage', `file://${cwd}/s`, '--leases', `file://${cwd}/l`],
        ...['--advertise', `http://u:${SECRET_WORD}@h:1`],
      ],
      { cwd, env: { HADB_SECRET: 'a-cluster-secret-of-the-test' } },
    );
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--advertise');
    expect(printed(run)).not.toContain(SECRET_WORD);
  });

  it('one helper redacts user information, fragments and secret-looking names', () => {
    expect(redactUrl('https://u:pw@host:1/x?token=t&region=r#frag')).toBe(
      'https://***@host:1/x?token=***&region=r#***',
    );
    expect(redactUrl('plain text, not a URL')).toBe('plain text, not a URL');
    expect(redactSetting('dbPassword', 'x')).toBe('***');
    expect(redactSetting('clusterPass', 'x')).toBe('***');
    expect(redactSetting('listen', '127.0.0.1:7000')).toBe('127.0.0.1:7000');
  });
});
