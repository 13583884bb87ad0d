/** Role transitions of the databases on a node: kept in memory for `/status`, written as JSON lines. */
import fs from 'node:fs';
import nodePath from 'node:path';
import type { Role, Transition } from '../api-types.ts';
import { type RoleSnapshot, roleOf } from '../machines/role.ts';
import {
  catchUpIntentOf,
  demoteReasonOf,
  leaseEpochOf,
  observedRecordOf,
} from '../machines/selectors.ts';

/** How many transitions a node keeps for `/status` (its recent failovers). */
export const RECENT_TRANSITIONS = 50;

/** The transition from `previous` to `snapshot`, or `null` when the role did not change. */
export function transitionOf(
  db: string,
  node: string,
  previous: RoleSnapshot | undefined,
  snapshot: RoleSnapshot,
  now: number,
): Transition | null {
  const from = previous ? roleOf(previous) : null;
  const to = roleOf(snapshot);
  if (from === to) return null;
  const epoch =
    leaseEpochOf(snapshot) ?? observedRecordOf(snapshot)?.epoch ?? leaseEpochOf(previous);
  const reason = reasonOf(from, to, snapshot, previous);
  return {
    db,
    node,
    from,
    to,
    epoch,
    at: new Date(now).toISOString(),
    ...(reason ? { reason } : {}),
  };
}

function reasonOf(
  from: Role | null,
  to: Role,
  snapshot: RoleSnapshot,
  previous: RoleSnapshot | undefined,
): string | undefined {
  const demoteReason = demoteReasonOf(snapshot);
  if (from === null) return 'opened';
  if (to === 'demoting') return demoteReason ?? undefined;
  // The reason is cleared on the way out of demoting.
  if (from === 'demoting') return demoteReasonOf(previous) ?? demoteReason ?? undefined;
  if (to === 'catching-up') {
    if (catchUpIntentOf(snapshot) !== 'claim') return 'behind';
    const record = observedRecordOf(snapshot);
    return !record ? 'no lease' : record.released ? 'lease released' : 'lease expired';
  }
  if (to === 'leader') return 'elected';
  if (from === 'candidate' && to === 'follower') return 'lost the election';
  return undefined;
}

/** The last {@link RECENT_TRANSITIONS}, oldest first, and an optional JSON-lines file. */
export class TransitionLog {
  readonly #recent: Transition[] = [];
  readonly #fd: number | null;
  readonly #onTransition: ((transition: Transition) => void) | undefined;
  readonly #onError: (error: unknown) => void;

  constructor(options: {
    file?: string | undefined;
    onTransition?: ((transition: Transition) => void) | undefined;
    onError: (error: unknown) => void;
  }) {
    this.#onTransition = options.onTransition;
    this.#onError = options.onError;
    if (options.file) {
      fs.mkdirSync(nodePath.dirname(options.file), { recursive: true });
      this.#fd = fs.openSync(options.file, 'a');
    } else {
      this.#fd = null;
    }
  }

  record(transition: Transition): void {
    this.#recent.push(transition);
    if (this.#recent.length > RECENT_TRANSITIONS) this.#recent.shift();
    try {
      // Synchronous: a line written is on disk even if the process is killed right after.
      if (this.#fd !== null) fs.writeSync(this.#fd, `${JSON.stringify(transition)}\n`);
      this.#onTransition?.(transition);
    } catch (error) {
      // Observability must never take a database down.
      this.#onError(error);
    }
  }

  recent(): Transition[] {
    return [...this.#recent];
  }

  close(): void {
    if (this.#fd !== null) fs.closeSync(this.#fd);
  }
}
