import * as fsp from 'node:fs/promises';

/** Fsyncs `directory`, so that files just created, renamed or removed in it survive a crash. */
export async function syncDirectory(directory: string): Promise<void> {
  // Windows cannot open a directory for fsync.
  if (process.platform === 'win32') return;
  const handle = await fsp.open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
