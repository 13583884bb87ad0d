import { parentPort } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { messageOf } from '../../error-message.ts';
import { InternalError } from '../../errors.ts';
import {
  type CaptureJob,
  encodeCapture,
  type SelfCheckJob,
  type SetAsideJob,
  setAsideSegment,
  shippedStateChecksum,
} from './capture.ts';

export type CaptureRequest =
  | { id: number; kind: 'capture'; job: CaptureJob }
  | { id: number; kind: 'checkpoint'; path: string }
  | { id: number; kind: 'setAside'; job: SetAsideJob }
  | { id: number; kind: 'selfCheck'; job: SelfCheckJob };

/** A PASSIVE checkpoint on a connection of its own: it copies WAL frames into the file. */
function checkpoint(path: string): void {
  const db = new Database(path);
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('wal_checkpoint(PASSIVE)');
  } finally {
    db.close();
  }
}

const port = parentPort;
if (port === null) throw new InternalError('capture-thread runs only as a worker');

port.on('message', (request: CaptureRequest) => {
  const { id } = request;
  try {
    if (request.kind === 'checkpoint') {
      checkpoint(request.path);
      port.postMessage({ id, done: true });
      return;
    }
    if (request.kind === 'selfCheck') {
      port.postMessage({ id, dbChecksum: shippedStateChecksum(request.job) });
      return;
    }
    if (request.kind === 'setAside') {
      port.postMessage({ id, setAside: setAsideSegment(request.job) });
      return;
    }
    const capture = encodeCapture(request.job);
    // The frame owns its buffer: handing it over costs no copy.
    port.postMessage({ id, capture }, capture ? [capture.bytes.buffer as ArrayBuffer] : []);
  } catch (error) {
    port.postMessage({ id, error: messageOf(error) });
  }
});
