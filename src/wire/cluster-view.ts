/**
 * The cluster as one node sees it (`GET /cluster`): its own status merged with the `/status` of
 * every peer it knows, and of the peers those know. A peer that does not answer is shown as down.
 */
import type { DatabaseStatus } from '../actors/hosted-database.ts';
import type { NodeStatus } from '../actors/node.ts';
import type { Transition } from '../actors/transitions.ts';

export interface ClusterNodeView {
  address: string | null;
  /** `null` for a peer that never answered. */
  node: string | null;
  up: boolean;
  self: boolean;
  /** Why a peer is shown as down. */
  error?: string;
  databases: DatabaseStatus[];
  transitions: Transition[];
}

export interface ClusterView {
  node: string;
  at: string;
  nodes: ClusterNodeView[];
}

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

/** The known peers of a node, learned from its options, lease records, tails and other nodes. */
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

/**
 * Fetches the `/status` of every known peer (in parallel, `timeoutMs` each), then of the peers
 * they know that this node did not, once more; what is learned is remembered in `peers`.
 */
export async function gatherCluster(
  self: NodeStatus,
  peers: PeerSet,
  timeoutMs: number,
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
  for (const database of self.databases) peers.add(database.leaderAddress);
  const asked = new Set<string>(own ? [own] : []);
  for (let round = 0; round < 2; round++) {
    const batch = peers.list().filter((peer) => !asked.has(peer));
    for (const peer of batch) asked.add(peer);
    const answers = await Promise.all(batch.map((peer) => fetchStatus(peer, timeoutMs)));
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

async function fetchStatus(
  address: string,
  timeoutMs: number,
): Promise<{ status: NodeStatus } | { error: string }> {
  try {
    const response = await fetch(`${address}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return { error: `HTTP ${response.status}` };
    const status = (await response.json()) as NodeStatus;
    if (typeof status?.node !== 'string' || !Array.isArray(status.databases)) {
      return { error: 'not a hadb node status' };
    }
    return { status };
  } catch (error) {
    const name = (error as { name?: unknown } | null)?.name;
    if (name === 'TimeoutError') return { error: `no answer in ${timeoutMs} ms` };
    const code = (error as { cause?: { code?: unknown } } | null)?.cause?.code;
    if (typeof code === 'string') return { error: code };
    return { error: error instanceof Error ? error.message : String(error) };
  }
}
