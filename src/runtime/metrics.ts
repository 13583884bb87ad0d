import { InvalidArgumentError } from '../errors.ts';
/**
 * A small Prometheus registry of our own: counters and gauges in the text exposition format.
 * Labels name roles, backends and outcomes, never databases: thousands of databases would mean
 * thousands of series.
 */
export type Labels = Readonly<Record<string, string>>;

interface Family {
  help: string;
  type: 'counter' | 'gauge';
  samples: () => Iterable<[Labels, number]>;
}

export class Counter {
  readonly #values = new Map<string, [Labels, number]>();
  /** Series by labels as callers write them (in one order, nearly always): no sort per count. */
  readonly #asWritten = new Map<string, [Labels, number]>();

  inc(labels: Labels = {}, by = 1): void {
    const written = JSON.stringify(labels);
    let entry = this.#asWritten.get(written);
    if (!entry) {
      const key = JSON.stringify(Object.entries(labels).sort());
      entry = this.#values.get(key);
      if (!entry) {
        entry = [labels, 0];
        this.#values.set(key, entry);
      }
      this.#asWritten.set(written, entry);
    }
    entry[1] += by;
  }

  values(): Iterable<[Labels, number]> {
    return this.#values.values();
  }
}

export class MetricsRegistry {
  readonly #families = new Map<string, Family>();

  counter(name: string, help: string): Counter {
    const counter = new Counter();
    this.#register(name, { help, type: 'counter', samples: () => counter.values() });
    return counter;
  }

  /** A gauge read when scraped. */
  gauge(name: string, help: string, collect: () => Iterable<[Labels, number]>): void {
    this.#register(name, { help, type: 'gauge', samples: collect });
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, family] of this.#families) {
      lines.push(`# HELP ${name} ${family.help}`, `# TYPE ${name} ${family.type}`);
      for (const [labels, value] of family.samples()) {
        lines.push(`${name}${formatLabels(labels)} ${value}`);
      }
    }
    return `${lines.join('\n')}\n`;
  }

  #register(name: string, family: Family): void {
    if (!/^[a-z_][a-z0-9_]*$/.test(name) || this.#families.has(name)) {
      throw new InvalidArgumentError(`bad or duplicate metric name ${name}`);
    }
    this.#families.set(name, family);
  }
}

function formatLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  const escaped = entries.map(
    ([name, value]) =>
      `${name}="${value.replaceAll('\\', '\\\\').replaceAll('\n', '\\n').replaceAll('"', '\\"')}"`,
  );
  return `{${escaped.join(',')}}`;
}
