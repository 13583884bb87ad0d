import pino, { type DestinationStream, type Logger } from 'pino';

/**
 * Loggers hadb makes itself when it is given none (a node's, the Hrana server's): level
 * `HADB_LOG_LEVEL` (default `warn`), written to stderr unless a destination was set, as the test
 * suite does to keep the lines of passing tests out of its output.
 */
let destination: DestinationStream | undefined;

export function setDefaultLogDestination(stream: DestinationStream | undefined): void {
  destination = stream;
}

export function defaultLogger(): Logger {
  return pino({ level: process.env.HADB_LOG_LEVEL ?? 'warn' }, destination ?? pino.destination(2));
}
