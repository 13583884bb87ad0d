/**
 * Progress of long transfers, on stderr only, so it never mixes into what a script reads from
 * stdout (`--json`). On a terminal it is one bar redrawn in place; otherwise (a log file, CI) a
 * plain line now and then. Small transfers show nothing at all.
 */

export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface ProgressOptions {
  /** What is moving, e.g. `downloading snapshot 42`. */
  label: string;
  stream: ProgressStream;
  /** Expected bytes, when known; may be set later with {@link Progress.update}. */
  totalBytes?: number;
  /** Nothing is shown until this much moved or is expected to (default 4 MiB). */
  minBytes?: number;
  /**
   * Without a terminal: at most one line per this many ms (default 5 s), the first one after as
   * long, so a transfer that finishes sooner prints nothing.
   */
  plainIntervalMs?: number;
  now?: () => number;
}

const DEFAULT_MIN_BYTES = 4 * 1024 * 1024;
const DEFAULT_PLAIN_INTERVAL_MS = 5000;
/** Redraws faster than this only cost CPU. */
const TTY_INTERVAL_MS = 100;
/** A bar that would vanish within this is only a flicker. */
const TTY_FIRST_DRAW_MS = 500;
const BAR_WIDTH = 24;

export class Progress {
  readonly #options: ProgressOptions;
  readonly #now: () => number;
  readonly #startedAt: number;
  readonly #minBytes: number;
  #done = 0;
  #total: number | undefined;
  #shown = false;
  #lastDrawAt: number;
  #finished = false;

  constructor(options: ProgressOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#startedAt = this.#now();
    this.#total = options.totalBytes;
    this.#minBytes = options.minBytes ?? DEFAULT_MIN_BYTES;
    // The first draw comes TTY_FIRST_DRAW_MS (terminal) or one interval (plain) after the start.
    this.#lastDrawAt = this.#isTTY
      ? this.#startedAt - TTY_INTERVAL_MS + TTY_FIRST_DRAW_MS
      : this.#startedAt;
  }

  /** Records how many bytes moved so far (absolute, not a delta). */
  update(doneBytes: number, totalBytes?: number): void {
    if (this.#finished) return;
    this.#done = doneBytes;
    if (totalBytes !== undefined) this.#total = totalBytes;
    if (!this.#worthShowing()) return;
    const now = this.#now();
    const interval = this.#isTTY
      ? TTY_INTERVAL_MS
      : (this.#options.plainIntervalMs ?? DEFAULT_PLAIN_INTERVAL_MS);
    if (now - this.#lastDrawAt < interval) return;
    this.#lastDrawAt = now;
    this.#draw(false);
  }

  /** Ends the display: a last state and a newline, if anything was shown. */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#shown) this.#draw(true);
  }

  get #isTTY(): boolean {
    return this.#options.stream.isTTY === true;
  }

  #worthShowing(): boolean {
    return this.#done >= this.#minBytes || (this.#total ?? 0) >= this.#minBytes;
  }

  #draw(final: boolean): void {
    this.#shown = true;
    const { label, stream } = this.#options;
    const seconds = Math.max(0.001, (this.#now() - this.#startedAt) / 1000);
    const rate = `${formatBytes(this.#done / seconds)}/s`;
    const total = this.#total;
    const amount =
      total === undefined
        ? formatBytes(this.#done)
        : `${formatBytes(this.#done)} of ${formatBytes(total)}`;
    const fraction = total === undefined || total === 0 ? null : Math.min(1, this.#done / total);
    const percent = fraction === null ? '' : `${Math.floor(fraction * 100)}% `;
    if (!this.#isTTY) {
      const state = final
        ? `done, ${formatBytes(this.#done)} in ${seconds.toFixed(1)} s`
        : `${percent}${amount}, ${rate}`;
      stream.write(`${label}: ${state}\n`);
      return;
    }
    const bar =
      fraction === null
        ? ''
        : `[${'#'.repeat(Math.round(fraction * BAR_WIDTH)).padEnd(BAR_WIDTH, '-')}] `;
    let line = `${label} ${bar}${percent}${amount} ${rate}`;
    const columns = this.#options.stream.columns;
    if (columns !== undefined && columns > 1 && line.length > columns - 1) {
      line = line.slice(0, columns - 1);
    }
    // \r and erase-line redraw in place; the final state keeps its line.
    stream.write(`\r\u001b[K${line}${final ? '\n' : ''}`);
  }
}

/** `1536` → `1.5 KiB`. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}
