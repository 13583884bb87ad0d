/** Storage that runs a step right before the next upload (support module; no vitest import, so fixtures use it too). */
import type { StorageBackend } from '../../../src/adapters/storage/types.ts';

/**
 * Wraps `inner`: `beforeNextUpload(step)` runs `step` once, when the next changeset is uploaded
 * (`putIfAbsent`), after its capture. Tests commit rows there to land between a capture and its
 * checkpoint.
 */
export function withUploadHook(inner: StorageBackend) {
  let step = () => {};
  const storage: StorageBackend = {
    put: (key, body) => inner.put(key, body),
    putIfAbsent: (key, body) => {
      const run = step;
      step = () => {};
      run();
      return inner.putIfAbsent(key, body);
    },
    get: (key, range) => inner.get(key, range),
    list: (prefix, options) => inner.list(prefix, options),
    delete: (keys) => inner.delete(keys),
  };
  return {
    storage,
    beforeNextUpload(next: () => void) {
      step = next;
    },
  };
}
