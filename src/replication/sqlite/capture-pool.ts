import { Worker } from 'node:worker_threads';
import {
  type Capture,
  type CaptureJob,
  encodeCapture,
  type SelfCheckJob,
  type SetAside,
  type SetAsideJob,
} from './capture.ts';
import type { CaptureRequest } from './capture-thread.ts';

type CaptureReply =
  | { id: number; capture: Capture | null }
  | { id: number; done: true }
  | { id: number; setAside: SetAside | null }
  | { id: number; dbChecksum: bigint }
  | { id: number; error: string };

/** After this many worker deaths the process captures on its own thread only. */
const MAX_WORKER_FAILURES = 3;

/**
 * One worker thread per process that reads, checksums, encodes and compresses large captures,
 * so a leader's application keeps its thread while a big changeset is built. Jobs run one after
 * another in arrival order. Anything the worker cannot do (it failed to start, died, or the job
 * threw) is done again on the caller's thread, which then also sees the real error.
 */
class CaptureWorker {
  #worker: Worker | null = null;
  #failures = 0;
  #nextId = 0;
  #workerCaptures = 0;
  #fallbacks = 0;
  readonly #pending = new Map<number, (reply: CaptureReply | null) => void>();

  async run(job: CaptureJob): Promise<Capture | null> {
    const reply = await this.#request({ kind: 'capture', job });
    if (reply === null || !('capture' in reply)) {
      this.#fallbacks += 1;
      return encodeCapture(job);
    }
    this.#workerCaptures += 1;
    return reply.capture;
  }

  /**
   * A PASSIVE checkpoint of the database at `path`, done by the worker on a connection of its
   * own. False when it could not be done there; the caller then checkpoints itself.
   */
  async checkpoint(path: string): Promise<boolean> {
    const reply = await this.#request({ kind: 'checkpoint', path });
    return reply !== null && 'done' in reply;
  }

  /**
   * Writes the frames of `job` into a new outbox segment on the worker. `undefined` when the worker
   * could not do it: the caller then decides whether to do it on its own thread.
   */
  async setAside(job: SetAsideJob): Promise<SetAside | null | undefined> {
    const reply = await this.#request({ kind: 'setAside', job });
    return reply !== null && 'setAside' in reply ? reply.setAside : undefined;
  }

  /** A leader's self-check on the worker; undefined when it could not run there. */
  async selfCheck(job: SelfCheckJob): Promise<bigint | undefined> {
    const reply = await this.#request({ kind: 'selfCheck', job });
    return reply !== null && 'dbChecksum' in reply ? reply.dbChecksum : undefined;
  }

  async #request(request: DistributiveOmit<CaptureRequest, 'id'>): Promise<CaptureReply | null> {
    const worker = this.#started();
    if (worker === null) return null;
    const id = this.#nextId++;
    return new Promise<CaptureReply | null>((resolve) => {
      this.#pending.set(id, resolve);
      if (this.#pending.size === 1) worker.ref();
      worker.postMessage({ ...request, id } as CaptureRequest);
    });
  }

  /** Captures the worker built, and those redone on the caller's thread after it failed. */
  counts(): { workerCaptures: number; fallbacks: number } {
    return { workerCaptures: this.#workerCaptures, fallbacks: this.#fallbacks };
  }

  #started(): Worker | null {
    if (this.#worker !== null) return this.#worker;
    if (this.#failures >= MAX_WORKER_FAILURES) return null;
    const worker = new Worker(new URL('./capture-worker.mjs', import.meta.url));
    worker.unref();
    worker.on('message', (reply: CaptureReply) => this.#settle(reply.id, reply));
    const fail = () => {
      if (this.#worker !== worker) return;
      this.#worker = null;
      this.#failures += 1;
      for (const id of [...this.#pending.keys()]) this.#settle(id, null);
    };
    worker.on('error', fail);
    worker.on('exit', fail);
    this.#worker = worker;
    return worker;
  }

  #settle(id: number, reply: CaptureReply | null): void {
    const resolve = this.#pending.get(id);
    if (resolve === undefined) return;
    this.#pending.delete(id);
    // Idle, the worker must not keep the process alive.
    if (this.#pending.size === 0) this.#worker?.unref();
    resolve(reply);
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export const captureWorker = new CaptureWorker();
