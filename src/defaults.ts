/**
 * The defaults of every tunable option, in one place: what the option docs, the README and the
 * CLI help promise. Internal tuning constants stay beside the code they tune.
 */

const KiB = 1024;
const MiB = 1024 * KiB;

// ---- a node (createNode) ----------------------------------------------------------------------

/** How long a database no one uses keeps its handles open before it hibernates. */
export const HIBERNATE_AFTER_MS = 30_000;
/** Databases with open handles at most on a node; the least recently used closes first. */
export const MAX_OPEN_DATABASES = 256;
/** SQLite page cache of all open databases of a node together. */
export const PAGE_CACHE_BYTES = 256 * MiB;
/** Page size of new databases. */
export const PAGE_SIZE = 4096;
/** How long `open` waits for the local copy to be bootstrapped. */
export const OPEN_TIMEOUT_MS = 60_000;
/** How long a read waits for this node's copy to reach the caller's last write. */
export const READ_YOUR_WRITES_TIMEOUT_MS = 1000;
/** How long a write looks for a leader (forwarding, retrying) before it fails. */
export const FORWARD_TIMEOUT_MS = 15_000;
/** How long an interactive transaction may stay open, however active. */
export const TRANSACTION_LIFETIME_MS = 60_000;

// ---- a leader ---------------------------------------------------------------------------------

/** How often a leader captures and ships what it did not ship already. */
export const SHIP_INTERVAL_MS = 100;
/** How soon a leader ships an `async` write, coalescing bursts into one changeset. */
export const SHIP_DELAY_MS = 10;
/** Checkpoint once this many WAL bytes were shipped since the last checkpoint. */
export const CHECKPOINT_EVERY_BYTES = 4 * MiB;
/** A WAL grown past this is cut back to it at the next commit after a checkpoint. */
export const WAL_TRUNCATE_BYTES = 64 * MiB;
/** Take a snapshot after this many changesets … */
export const SNAPSHOT_EVERY_CHANGESETS = 1000;
/** … or this many changeset bytes, whichever comes first. */
export const SNAPSHOT_EVERY_BYTES = 256 * MiB;
/** Share of elapsed time the leader's self-check may take (0: never). */
export const SELF_CHECK_BUDGET = 0.01;

// ---- statements (the statement processes) -----------------------------------------------------

/** Time per read or interactive statement before `StatementTimeoutError`. */
export const STATEMENT_TIMEOUT_MS = 5000;
/** Bytes of rows per response before `ResultTooLargeError`. */
export const MAX_RESULT_BYTES = 64 * MiB;
/** Statement processes per node. */
export const STATEMENT_PROCESSES = 2;
/** Connections per statement process. */
export const STATEMENT_CONNECTIONS_PER_PROCESS = 64;

// ---- the Hrana server -------------------------------------------------------------------------

/** A Hrana stream left open by a client is dropped (its transaction rolled back) after this idleness. */
export const HRANA_STREAM_IDLE_MS = 10_000;
