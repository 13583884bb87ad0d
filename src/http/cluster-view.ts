/**
 * The cluster as one node sees it (`GET /cluster`): its own status merged with the status of
 * every peer it knows, and of the peers those know. A peer that does not answer is shown as down.
 *
 * Peers come only from authenticated sources: the node's options, lease records, authenticated
 * tail requests, and the lists of peers whose answers are proven. A peer's status is trusted only
 * with a proof that it holds the cluster secret: the asking node sends a fresh nonce, the peer
 * answers with an HMAC (under a key derived from the secret) of the nonce and its status. The
 * secret itself is never sent, so a process that took over a former peer's port learns nothing
 * and is shown as down, its claims and the addresses it lists ignored.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { ClusterNodeView, ClusterView, NodeStatus } from '../api-types.ts';
import { messageOf } from '../error-message.ts';
import { BadRequestError, LimitExceededError } from '../errors.ts';
import { PEER_STATUS_PATH } from '../wire/node-protocol.ts';
import type { HttpAnswer } from './listener.ts';

/** The most of a peer's answer read: a process that is not a node may send anything. */
const MAX_PEER_ANSWER_BYTES = 8 * 1024 * 1024;
const NONCE = /^[A-Za-z0-9_-]{22,128}$/;

/** Peers a node remembers, at most; beyond that new ones are ignored. */
export const MAX_PEERS = 100;

/** `http(s)://host:port` without a trailing slash, or `null` when `value` is not such an address. */
export function normalizePeer(value: unknown): string | null {
  if (typeof value !== 'string' || value.length > 500) return null;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  if (url.username || url.password || url.search || url.hash) return null;
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

/** The known peers of a node: from its options, lease records, authenticated tails and proven peers. */
export class PeerSet {
  readonly #peers = new Set<string>();
  /** The node id each address last answered with, to name a peer that is down now. */
  readonly #names = new Map<string, string>();

  add(value: unknown): void {
    const peer = normalizePeer(value);
    if (peer && this.#peers.size < MAX_PEERS) this.#peers.add(peer);
  }

  list(): string[] {
    return [...this.#peers];
  }

  nameOf(address: string): string | undefined {
    return this.#names.get(address);
  }

  named(address: string, node: string): void {
    this.#names.set(address, node);
  }
}

/** The HMAC that proves an answer to `nonce` comes from a holder of the cluster secret. */
function statusProof(secret: string, nonce: string, status: string): string {
  // A key of its own: nothing else signed with the secret can be passed off as a proof.
  const key = createHmac('sha256', secret).update('hadb cluster status proof').digest();
  return createHmac('sha256', key).update(`${nonce}\n${status}`).digest('base64url');
}

/** The answer at {@link PEER_STATUS_PATH}: this node's status and its proof for the nonce asked. */
export function provenStatus(status: NodeStatus, secret: string, url: URL): HttpAnswer {
  const nonce = url.searchParams.get('nonce') ?? '';
  if (!NONCE.test(nonce)) throw new BadRequestError('nonce must be 22..128 base64url characters');
  const text = JSON.stringify(status);
  return {
    status: 200,
    body: JSON.stringify({ status: text, proof: statusProof(secret, nonce, text) }),
    contentType: 'application/json',
  };
}

/**
 * Fetches the proven status of every known peer (in parallel, `timeoutMs` each), then of the
 * peers the proven ones know that this node did not, once more; what is learned is remembered.
 */
export async function gatherCluster(
  self: NodeStatus,
  peers: PeerSet,
  timeoutMs: number,
  secret: string,
): Promise<ClusterView> {
  const own = self.address === null ? null : normalizePeer(self.address);
  const views: ClusterNodeView[] = [
    {
      address: self.address,
      node: self.node,
      up: true,
      self: true,
      databases: self.databases,
      transitions: self.transitions,
    },
  ];
  // Leader addresses from this node's own lease reads.
  for (const database of self.databases) peers.add(database.leaderAddress);
  const asked = new Set<string>(own ? [own] : []);
  for (let round = 0; round < 2; round++) {
    const batch = peers.list().filter((peer) => !asked.has(peer));
    for (const peer of batch) asked.add(peer);
    const answers = await Promise.all(
      batch.map((peer) => fetchProvenStatus(peer, timeoutMs, secret)),
    );
    for (const [i, answer] of answers.entries()) {
      const address = batch[i] as string;
      if ('error' in answer) {
        views.push({
          address,
          node: peers.nameOf(address) ?? null,
          up: false,
          self: false,
          error: answer.error,
          databases: [],
          transitions: [],
        });
        continue;
      }
      const status = answer.status;
      peers.named(address, status.node);
      for (const peer of status.peers ?? []) peers.add(peer);
      for (const database of status.databases) peers.add(database.leaderAddress);
      views.push({
        address,
        node: status.node,
        up: true,
        self: false,
        databases: status.databases,
        transitions: status.transitions ?? [],
      });
    }
  }
  // A restarted node answers at a new address: its old one is not a node that is down.
  const upNodes = new Set(views.filter((view) => view.up).map((view) => view.node));
  const nodes = views.filter((view) => view.up || view.node === null || !upNodes.has(view.node));
  nodes.sort((a, b) => (a.node ?? a.address ?? '').localeCompare(b.node ?? b.address ?? ''));
  return { node: self.node, at: new Date().toISOString(), nodes };
}

async function fetchProvenStatus(
  address: string,
  timeoutMs: number,
  secret: string,
): Promise<{ status: NodeStatus } | { error: string }> {
  const nonce = randomBytes(24).toString('base64url');
  try {
    const response = await fetch(`${address}${PEER_STATUS_PATH}?nonce=${nonce}`, {
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) {
      await response.body?.cancel();
      return { error: `HTTP ${response.status}` };
    }
    const answer = JSON.parse(await limitedText(response, MAX_PEER_ANSWER_BYTES)) as unknown;
    const { status: text, proof } = (answer ?? {}) as { status?: unknown; proof?: unknown };
    if (typeof text !== 'string' || typeof proof !== 'string') return { error: NOT_PROVEN };
    const wanted = Buffer.from(statusProof(secret, nonce, text));
    const given = Buffer.from(proof);
    if (given.length !== wanted.length || !timingSafeEqual(given, wanted)) {
      return { error: NOT_PROVEN };
    }
    const status = JSON.parse(text) as NodeStatus;
    if (typeof status?.node !== 'string' || !Array.isArray(status.databases)) {
      return { error: 'not a hadb node status' };
    }
    return { status };
  } catch (error) {
    const name = (error as { name?: unknown } | null)?.name;
    if (name === 'TimeoutError') return { error: `no answer in ${timeoutMs} ms` };
    if (error instanceof SyntaxError) return { error: NOT_PROVEN };
    const code = (error as { cause?: { code?: unknown } } | null)?.cause?.code;
    if (typeof code === 'string') return { error: code };
    return { error: messageOf(error) };
  }
}

const NOT_PROVEN = 'its answer is not proven with the cluster secret: not a node of this cluster';

/** The body as text, refused past `maxBytes`. */
async function limitedText(response: Response, maxBytes: number): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.length;
    if (total > maxBytes) {
      await reader.cancel();
      throw new LimitExceededError(`answer larger than ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
