import { InvalidArgumentError, LeaseRecordInvalidError } from '../errors.ts';

/** What a lease key holds: who leads a database, in which epoch, and for how long per renewal. */
export interface LeaseRecord {
  /** Node id of the holder. */
  holder: string;
  /** The holder's incarnation: a restarted node has a new session and must not adopt the old one's lease. */
  session: string;
  /** Fencing token: strictly greater for every new holder. */
  epoch: number;
  /** How long the lease lasts after each renewal, on the holder's own clock. */
  ttlMs: number;
  /** Written by a leader that gives the lease up; anyone else may claim it at once. */
  released: boolean;
  /** Where the holder accepts forwarded writes, if anywhere. */
  address?: string;
  /**
   * Under node-level leases: the holder node's incarnation whose liveness record keeps this
   * ownership alive. Such a record is never renewed itself, so `ttlMs` does not apply to it.
   */
  nodeSession?: string;
  /** On a node record: how many ownership records this node released; a change means re-read them. */
  releases?: number;
  /** On a node record: how many databases this node leads, for balancing (written with renewals). */
  leaders?: number;
}

const FORMAT = 'hadb-lease';
export const LEASE_RECORD_VERSION = 1;
const MAX_RECORD_BYTES = 4096;
export const MAX_TTL_MS = 10 * 60_000;

/**
 * Encodes a record, refusing one that {@link decodeLeaseRecord} would reject: nobody could ever
 * take such a lease over, since a record that cannot be read is never overwritten.
 */
export function encodeLeaseRecord(record: LeaseRecord): Uint8Array {
  const { holder, session, epoch, ttlMs, released, address, nodeSession, releases, leaders } =
    record;
  const body = {
    format: FORMAT,
    v: LEASE_RECORD_VERSION,
    holder,
    session,
    epoch,
    ttlMs,
    released,
    address,
    nodeSession,
    releases,
    leaders,
  };
  const bytes = new TextEncoder().encode(JSON.stringify(body));
  const problem = recordProblem(bytes.length, body);
  if (problem) throw new InvalidArgumentError(`cannot write this lease record: ${problem}`);
  return bytes;
}

/** Parses a lease record, rejecting anything hadb did not write with {@link LeaseRecordInvalidError}. */
export function decodeLeaseRecord(bytes: Uint8Array): LeaseRecord {
  if (bytes.length > MAX_RECORD_BYTES)
    throw invalid(`${bytes.length} bytes, more than ${MAX_RECORD_BYTES}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (cause) {
    throw invalid('not UTF-8 JSON', cause);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw invalid('not a JSON object');
  const problem = recordProblem(bytes.length, parsed as Record<string, unknown>);
  if (problem) throw invalid(problem);
  const { holder, session, epoch, ttlMs, released, address, nodeSession, releases, leaders } =
    parsed as LeaseRecord;
  const record: LeaseRecord = { holder, session, epoch, ttlMs, released };
  if (address !== undefined) record.address = address;
  if (nodeSession !== undefined) record.nodeSession = nodeSession;
  if (releases !== undefined) record.releases = releases;
  if (leaders !== undefined) record.leaders = leaders;
  return record;
}

/** Why these fields are not a lease record hadb can use, or null when they are. */
function recordProblem(size: number, fields: Record<string, unknown>): string | null {
  if (size > MAX_RECORD_BYTES) return `${size} bytes, more than ${MAX_RECORD_BYTES}`;
  if (fields.format !== FORMAT)
    return `format is ${JSON.stringify(fields.format)}, expected "${FORMAT}"`;
  if (fields.v !== LEASE_RECORD_VERSION) {
    return `format version ${JSON.stringify(fields.v)} is not supported (this hadb reads version ${LEASE_RECORD_VERSION})`;
  }
  const { holder, session, epoch, ttlMs, released, address } = fields;
  if (typeof holder !== 'string' || holder === '') return 'holder must be a non-empty string';
  if (typeof session !== 'string' || session === '') return 'session must be a non-empty string';
  if (!Number.isSafeInteger(epoch) || (epoch as number) < 1)
    return 'epoch must be a positive integer';
  if (!Number.isSafeInteger(ttlMs) || (ttlMs as number) < 1 || (ttlMs as number) > MAX_TTL_MS) {
    return `ttlMs must be an integer in 1..${MAX_TTL_MS}`;
  }
  if (typeof released !== 'boolean') return 'released must be a boolean';
  if (address !== undefined && typeof address !== 'string') return 'address must be a string';
  const { nodeSession } = fields;
  if (nodeSession !== undefined && (typeof nodeSession !== 'string' || nodeSession === ''))
    return 'nodeSession must be a non-empty string';
  const { releases } = fields;
  if (releases !== undefined && (!Number.isSafeInteger(releases) || (releases as number) < 0))
    return 'releases must be a non-negative integer';
  const { leaders } = fields;
  if (leaders !== undefined && (!Number.isSafeInteger(leaders) || (leaders as number) < 0))
    return 'leaders must be a non-negative integer';
  return null;
}

function invalid(why: string, cause?: unknown): LeaseRecordInvalidError {
  return new LeaseRecordInvalidError(
    `unreadable lease record: ${why}`,
    cause === undefined ? undefined : { cause },
  );
}
