/**
 * The relay of Hrana streams between nodes: a follower sends a stream that needs the leader (an
 * interactive transaction) there with its stored SQL, and a stream another node holds to that
 * node; the receiving side runs what is relayed to it and says what it committed.
 */
import type { HadbDatabase } from '../api-types.ts';
import { messageOf } from '../error-message.ts';
import { BadRequestError } from '../errors.ts';
import type { HttpAnswer, RouteHandler } from '../http/listener.ts';
import { NodeClient } from '../http/node-client.ts';
import { RELAY_PATH } from '../wire/node-protocol.ts';
import { noteWrite } from './atomic.ts';
import {
  type Answer,
  checkPipeline,
  hranaStatus,
  isObject,
  isToken,
  type PipelineBody,
  problem,
  toJson,
} from './codec.ts';
import type { Stream } from './streams.ts';

/** How long a relay waits for a leader to appear, and for the leader to answer. */
const RELAY_FIND_LEADER_MS = 10_000;
const RELAY_TIMEOUT_MS = 40_000;
/** Answers after which a relay tries again: the node no longer leads, is starting, or is full. */
const RETRIED = ['NOT_LEADER', 'STARTING', 'OVERLOADED'] as const;

/**
 * Runs a pipeline here. `relayed`: the stored SQL texts of a stream a follower hands over; null
 * from a client. `client`: the address of the client, as the node it connected to saw it.
 */
export type RunPipeline = (
  name: string,
  body: PipelineBody,
  relayed: [number, string][] | null,
  client: string,
) => Promise<Answer>;

export interface RelayOptions {
  databases: ReadonlyMap<string, HadbDatabase>;
  /** The cluster secret, which authenticates relays to other nodes. */
  secret: string;
  /** This node's peer address. */
  self: string;
  /** Where the leader of `db` takes relayed streams, as far as this node knows. */
  leaderAddress(db: string): string | null;
}

export interface Relay {
  /** A stream another node holds (the leader, for a transaction): the request goes there. */
  held(holder: string, name: string, body: PipelineBody, client: string): Promise<Answer>;
  /** A stream that needs the leader starts there: waits (bounded) for one to be known. */
  fresh(db: HadbDatabase, stream: Stream, body: PipelineBody): Promise<Answer>;
  /** For the node's listener at {@link RELAY_PATH}: runs streams other nodes relay here. */
  readonly route: RouteHandler;
  close(): void;
}

export function hranaRelay(options: RelayOptions, pipeline: RunPipeline): Relay {
  const peers = new NodeClient(options.secret);

  async function held(
    holder: string,
    name: string,
    body: PipelineBody,
    client: string,
  ): Promise<Answer> {
    try {
      return await relayTo(holder, { db: name, sqls: [], client, ...body });
    } catch (error) {
      return problem(
        'STREAM_EXPIRED',
        `the node that held this stream (${holder}) did not answer (${messageOf(error)}): it may ` +
          'have stopped or lost the lead. A transaction open there was rolled back (a COMMIT ' +
          'in this very request may or may not have been applied); start again',
      );
    }
  }

  async function fresh(db: HadbDatabase, stream: Stream, body: PipelineBody): Promise<Answer> {
    const deadline = Date.now() + RELAY_FIND_LEADER_MS;
    let last = 'no leader is known';
    for (;;) {
      if (db.role === 'leader') return pipeline(db.name, body, [...stream.sqls], stream.client);
      const address = options.leaderAddress(db.name);
      if (address !== null && address !== options.self) {
        try {
          const answer = await relayTo(address, {
            db: db.name,
            sqls: [...stream.sqls],
            client: stream.client,
            baton: null,
            requests: body.requests,
          });
          // It no longer leads, or it is starting (or full): either way, try again.
          if (!RETRIED.some((code) => hranaStatus(code) === answer.status)) return answer;
          last = `${address} answered ${answer.status}`;
        } catch (error) {
          last = `${address}: ${messageOf(error)}`;
        }
      }
      if (Date.now() >= deadline) {
        return problem('LEADER_UNAVAILABLE', `${db.name}: no leader to run the stream (${last})`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  async function relayTo(
    address: string,
    message: {
      db: string;
      sqls: [number, string][];
      client: string;
      baton: string | null;
      requests: unknown[];
    },
  ): Promise<Answer> {
    const { status, body } = await peers.request(
      'POST',
      `${address}${RELAY_PATH}`,
      Buffer.from(toJson(message)),
      RELAY_TIMEOUT_MS,
    );
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch {
      throw new BadRequestError(
        `answered ${status} without JSON: ${body.toString('utf8').slice(0, 200)}`,
      );
    }
    const db = options.databases.get(message.db);
    if (isObject(parsed) && isToken(parsed.hadb_position)) {
      const { hadb_position: position, ...rest } = parsed;
      if (db) noteWrite(db, position);
      parsed = rest;
    }
    return { status, body: parsed };
  }

  const route: RouteHandler = async ({ body }): Promise<HttpAnswer> => {
    let answer: Answer;
    let message: unknown;
    try {
      message = JSON.parse(Buffer.from(body).toString('utf8'));
    } catch (error) {
      message = messageOf(error);
    }
    const checked = checkPipeline(message);
    if (!isObject(message) || typeof message.db !== 'string' || typeof checked === 'string') {
      answer = problem('BAD_REQUEST', 'bad relayed pipeline');
    } else {
      const sqls = Array.isArray(message.sqls)
        ? (message.sqls as unknown[]).filter(
            (entry): entry is [number, string] =>
              Array.isArray(entry) && typeof entry[0] === 'number' && typeof entry[1] === 'string',
          )
        : [];
      // The relaying node is trusted (cluster secret) to name the client it relays for.
      const client = typeof message.client === 'string' ? message.client : 'relayed';
      answer = await pipeline(message.db, checked, sqls, client);
      // What the stream committed here: the relaying node's reads wait for it.
      const db = options.databases.get(message.db);
      if (db && answer.status === 200 && isObject(answer.body)) {
        answer = { status: 200, body: { ...answer.body, hadb_position: db.position } };
      }
    }
    return {
      status: answer.status,
      body: toJson(answer.body),
      contentType: 'application/json',
    };
  };

  return { held, fresh, route, close: () => peers.close() };
}
