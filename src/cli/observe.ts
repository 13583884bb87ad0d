/**
 * `--transitions`, `--inspect` and `--inspect-url`, shared by `hadb serve` and `hadb worker`: what
 * they add to a node's options, and the inspector connection to stop on exit.
 */
import { InvalidArgumentError, Option } from 'commander';
import { messageOf } from '../error-message.ts';
import { InvalidArgumentError as BadOptionError } from '../errors.ts';
import { redactUrl } from '../redact.ts';
import { assertValidDbName } from '../replication/snapshot.ts';
import type { NodeOptions } from '../runtime/node.ts';

export const DEFAULT_INSPECT_URL = 'ws://localhost:8080';

export interface ObserveFlags {
  transitions?: string;
  inspect?: string[];
  inspectUrl: string;
}

export function transitionsOption(): Option {
  return new Option(
    '--transitions <file>',
    'append every role transition to this file, as JSON lines',
  );
}

export function inspectOption(): Option {
  return new Option(
    '--inspect <db,...>',
    'send the state machines of these databases (never all) to the Stately inspector',
  ).argParser(parseDbList);
}

export function inspectUrlOption(): Option {
  return new Option('--inspect-url <url>', 'WebSocket the inspector listens on (with --inspect)')
    .default(DEFAULT_INSPECT_URL)
    .argParser(parseWsUrl);
}

function parseDbList(value: string): string[] {
  const names = value
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (names.length === 0) throw new InvalidArgumentError('--inspect needs at least one database');
  for (const name of names) {
    try {
      assertValidDbName(name);
    } catch (error) {
      throw new InvalidArgumentError(messageOf(error));
    }
  }
  return names;
}

function parseWsUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError(
      `--inspect-url must be a ws:// or wss:// URL, got ${redactUrl(value)}`,
    );
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    throw new InvalidArgumentError(
      `--inspect-url must be a ws:// or wss:// URL, got ${redactUrl(value)}`,
    );
  }
  return value;
}

export interface Observing {
  options: Pick<NodeOptions, 'transitions' | 'inspect'>;
  /** Closes the inspector's connection. */
  stop(): void;
}

/**
 * The node options for the flags. The inspector is loaded only when asked for, and sees the
 * listed databases only: each of their actors sends every event and snapshot over the socket.
 */
export async function observeOptions(flags: ObserveFlags, opened: string[]): Promise<Observing> {
  const options: Observing['options'] = {};
  if (flags.transitions) options.transitions = { file: flags.transitions };
  if (!flags.inspect?.length) return { options, stop: () => {} };
  const unknown = flags.inspect.filter((name) => !opened.includes(name));
  if (unknown.length > 0) {
    throw new BadOptionError(`--inspect names databases not opened: ${unknown.join(', ')}`);
  }
  const { createWebSocketInspector } = await import('@statelyai/inspect');
  const inspector = createWebSocketInspector({ url: flags.inspectUrl });
  options.inspect = { databases: flags.inspect, observer: inspector.inspect };
  return { options, stop: () => inspector.stop() };
}
