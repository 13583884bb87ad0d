/**
 * Debian's chromium for the browser tests, driven by playwright-core (which downloads no browser).
 * `scripts/services up` installs it. In CI (`CI` set) a missing chromium is a failing test, never a
 * silent skip; elsewhere the suite is skipped with a visible warning, like the services suites.
 */
import fs from 'node:fs';
import { describe, test } from 'vitest';

export const CHROMIUM = process.env.HADB_TEST_CHROMIUM ?? '/usr/bin/chromium';

const HOW_TO_INSTALL = 'install it with `scripts/services up` (or `apt-get install chromium`)';

export function describeWithChromium(title: string, body: (executablePath: string) => void): void {
  if (isExecutable(CHROMIUM)) {
    describe(title, () => body(CHROMIUM));
    return;
  }
  const message = `chromium is not at ${CHROMIUM} (HADB_TEST_CHROMIUM); ${HOW_TO_INSTALL}`;
  if (process.env.CI) {
    describe(title, () => {
      test('needs chromium', () => {
        throw new Error(message);
      });
    });
    return;
  }
  process.emitWarning(`suite "${title}" did not run: ${message}`, 'HadbTestServices');
  describe.skip(`${title} [not run: chromium missing; ${HOW_TO_INSTALL}]`, () => body(''));
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
