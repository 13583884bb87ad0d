import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { hadb } from './support/cli.ts';

// Without AWS credentials an s3:// URL cannot work: that is configuration to fix (exit 2, naming
// the variables to set), not storage out of reach (3) or a failure (1). Nothing here reaches S3:
// the endpoint has nothing listening, and credentials are looked for before any request.

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-cli-s3-credentials-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

/** No credentials from the environment, a profile file or an instance role. */
const NO_CREDENTIALS: Record<string, string> = {
  AWS_ACCESS_KEY_ID: '',
  AWS_SECRET_ACCESS_KEY: '',
  AWS_SESSION_TOKEN: '',
  AWS_PROFILE: '',
  AWS_SHARED_CREDENTIALS_FILE: path.join(root, 'no-credentials'),
  AWS_CONFIG_FILE: path.join(root, 'no-config'),
  AWS_WEB_IDENTITY_TOKEN_FILE: '',
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '',
  AWS_CONTAINER_CREDENTIALS_FULL_URI: '',
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
  HOME: root,
};

const S3_URL =
  's3://hadb-test/app?endpoint=http://127.0.0.1:1&region=us-east-1&forcePathStyle=true';

describe('an s3:// URL without AWS credentials', () => {
  it('is a configuration error, exit 2, with a hint naming the variables', async () => {
    const [list, serve, noRegion] = await Promise.all([
      hadb(['list', '--storage', S3_URL, '--json'], { cwd: root, env: NO_CREDENTIALS }),
      hadb(
        [
          'serve',
          '--no-auth',
          ...['--id', 'n', '--data', path.join(root, 'n'), '--db', 'app'],
          ...['--storage', pathToFileURL(path.join(root, 'storage')).href],
          ...['--leases', S3_URL, '--listen', '127.0.0.1:0'],
        ],
        { cwd: root, env: { ...NO_CREDENTIALS, HADB_SECRET: 'a-cluster-secret-of-the-test' } },
      ),
      hadb(['list', '--storage', 's3://hadb-test/app?endpoint=http://127.0.0.1:1'], {
        cwd: root,
        env: { ...NO_CREDENTIALS, AWS_REGION: '', AWS_DEFAULT_REGION: '' },
      }),
    ]);
    expect(list.code, list.stderr).toBe(2);
    expect(JSON.parse(list.stdout)).toMatchObject({ ok: false, code: 'INVALID_ARGUMENT' });
    expect(list.stderr).toMatch(/s3:\/\/ storage: no AWS credentials/);
    expect(serve.code, serve.stderr).toBe(2);
    expect(serve.stderr).toMatch(/s3:\/\/ leases: no AWS credentials/);
    for (const run of [list, serve]) {
      expect(run.stderr).toMatch(/set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE/);
    }
    expect(noRegion.code, noRegion.stderr).toBe(2);
    expect(noRegion.stderr).toMatch(
      /no AWS region \(.*\): add \?region=… to the URL or set AWS_REGION/,
    );
  });
});
