import { BadRequestError, type HadbErrorCode, httpStatusOf, UnauthorizedError } from '../errors.ts';

/**
 * Where nodes reach each other on their listeners, and the query strings of the long polls. The
 * bodies are in forward.ts (msgpack); the Hrana relay and the copies request carry JSON.
 */

/** A follower's write (or a read that must see the leader), to the leader. */
export const FORWARD_PATH = '/hadb/v1/forward';
/** A follower's long poll for each newly durable sequence of one database. */
export const TAIL_PATH = '/hadb/v1/tail';
/** One long poll per pair of nodes for every database the answering node leads (node-level leases). */
export const NODE_TAIL_PATH = '/hadb/v1/tail-node';
/** A node's status with a proof that it holds the cluster secret (open to anyone, no body). */
export const PEER_STATUS_PATH = '/hadb/v1/status';
/** A Hrana stream a follower relays to the node that holds it (the leader). */
export const RELAY_PATH = '/hadb/v1/hrana';
/**
 * Which of these databases the receiving node follows, and at what sequence. Asked only while a
 * node leads more than its share, of the nodes under theirs.
 */
export const COPIES_PATH = '/balance/copies';

/** The status of a route that failed outright: its answer is the error's text, not a format. */
export const FAILED_STATUS = 500;

/**
 * The status a node's listener answers an error a route threw with, as text: a malformed request
 * and a wrong secret by their codes ({@link httpStatusOf}); anything else means the route failed.
 */
export function thrownErrorStatus(error: unknown): number {
  if (error instanceof BadRequestError || error instanceof UnauthorizedError) {
    return httpStatusOf(error.code);
  }
  return FAILED_STATUS;
}

/**
 * What an answer given as text (by {@link thrownErrorStatus}) stands for, read from its status;
 * null for an answer in the route's own format. A 5xx other than the status of an INTERNAL answer
 * (which carries its code) is a node that failed, whatever stood between.
 */
export function codeOfTextAnswer(
  status: number,
): Extract<HadbErrorCode, 'BAD_REQUEST' | 'UNAUTHORIZED' | 'INTERNAL'> | null {
  if (status === httpStatusOf('BAD_REQUEST')) return 'BAD_REQUEST';
  if (status === httpStatusOf('UNAUTHORIZED')) return 'UNAUTHORIZED';
  if (status >= 500 && status !== httpStatusOf('INTERNAL')) return 'INTERNAL';
  return null;
}

/** The query of {@link TAIL_PATH}. */
export interface TailQuery {
  db: string;
  /** The follower's sequence: the leader answers once a later one is durable. */
  after: number;
  /** The follower's own address, for the leader's cluster view; null when it has none. */
  from: string | null;
}

/** The query of {@link NODE_TAIL_PATH}. */
export interface NodeTailQuery {
  /** The cursor of the last answer (0 at first). */
  after: number;
  /** The session of the last answer ('' at first). */
  session: string;
  /** The asking node's own address, for the leader's cluster view; null when it has none. */
  from: string | null;
}

export function encodeTailQuery(query: TailQuery): string {
  return encodeQuery([
    ['db', query.db],
    ['after', String(query.after)],
    ['from', query.from],
  ]);
}

/** Refuses an `after` that is not a sequence number with {@link BadRequestError}; absent is 0. */
export function decodeTailQuery(params: URLSearchParams): TailQuery {
  return {
    db: params.get('db') ?? '',
    after: decodeAfter(params, 'after must be a sequence number'),
    from: params.get('from'),
  };
}

export function encodeNodeTailQuery(query: NodeTailQuery): string {
  return encodeQuery([
    ['after', String(query.after)],
    ['session', query.session],
    ['from', query.from],
  ]);
}

/** Refuses an `after` that is not a cursor with {@link BadRequestError}; absent is 0. */
export function decodeNodeTailQuery(params: URLSearchParams): NodeTailQuery {
  return {
    after: decodeAfter(params, 'after must be a cursor'),
    session: params.get('session') ?? '',
    from: params.get('from'),
  };
}

/** The fields in order; a null or empty `from` is left out (a node with no address yet). */
function encodeQuery(fields: [string, string | null][]): string {
  const params = new URLSearchParams();
  for (const [name, value] of fields) {
    if (value !== null && (name !== 'from' || value !== '')) params.append(name, value);
  }
  return params.toString();
}

function decodeAfter(params: URLSearchParams, problem: string): number {
  // Number(null) is 0: a query without `after` asks from the start, as it always has.
  const after = Number(params.get('after'));
  if (!Number.isSafeInteger(after) || after < 0) throw new BadRequestError(problem);
  return after;
}
