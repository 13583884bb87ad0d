/**
 * How Hrana request paths map to databases: `/<name>/v3/pipeline` (and `/<name>/v2/…`,
 * `/<name>/v3`, `/<name>/`); a node serving exactly one database also serves it at `/v3/pipeline`.
 * Routing is exact: anything else is a 404 that names the problem, never another database.
 */
import { InvalidArgumentError } from '../errors.ts';

/** Path segments Hrana uses for versions (`v2`, `v3`, `v3-protobuf`): no database may be named so. */
const VERSION_SEGMENT = /^v\d+(?:-.*)?$/i;

/** Whether `name` would be read as a Hrana version segment rather than a database name. */
export function isHranaPathSegment(name: string): boolean {
  return VERSION_SEGMENT.test(name);
}

/**
 * Refuses database names a Hrana client could not reach, with {@link InvalidArgumentError}:
 * `/v3/pipeline` must mean the version path, so `v3` (or `v2`, `v3-x`) cannot be a database.
 */
export function assertServableDbName(name: string): void {
  if (isHranaPathSegment(name)) {
    throw new InvalidArgumentError(
      `database name ${JSON.stringify(name)} is reserved: names like v2, v3 or v3-… are Hrana path segments`,
    );
  }
}

export type HranaRoute =
  | { found: true; db: string; pipeline: boolean }
  | { found: false; code: 'NOT_FOUND' | 'UNKNOWN_DATABASE'; message: string };

/**
 * The database and endpoint of a request target (`request.url`, path and query), read as the raw
 * path: `new URL('//other/v3/pipeline', base)` would take `other` for a host.
 */
export function hranaRoute(target: string, served: readonly string[]): HranaRoute {
  const path = target.split(/[?#]/, 1)[0] ?? '';
  const notFound = (message: string): HranaRoute => ({ found: false, code: 'NOT_FOUND', message });
  const shown = JSON.stringify(path.length > 100 ? `${path.slice(0, 100)}…` : path);
  if (!path.startsWith('/')) return notFound(`malformed path ${shown}`);
  const segments = path.slice(1).split('/');
  // One trailing slash is how clients are told to keep the database name: `/orders/`.
  if (segments.length > 1 && segments.at(-1) === '') segments.pop();
  if (segments.length === 1 && segments[0] === '') segments.pop();
  if (segments.some((segment) => segment === '')) {
    return notFound(`malformed path ${shown}: empty segment`);
  }
  let db: string | undefined;
  if (segments[0] !== undefined && !isHranaPathSegment(segments[0])) {
    try {
      db = decodeURIComponent(segments.shift() as string);
    } catch {
      return notFound(`malformed path ${shown}: bad %-escape`);
    }
  }
  const [version, action, ...rest] = segments;
  const known = version === undefined || version === 'v2' || version === 'v3';
  if (!known || rest.length > 0 || (action !== undefined && action !== 'pipeline')) {
    return notFound(`no such endpoint ${shown}: use /<database>/v3/pipeline`);
  }
  if (db === undefined) {
    if (served.length !== 1) {
      return notFound(
        `this node serves ${served.length} databases: connect to http://host:port/<database>/ ` +
          '(keep the trailing slash: without it the client drops the name)',
      );
    }
    db = served[0] as string;
  }
  if (!served.includes(db)) {
    return {
      found: false,
      code: 'UNKNOWN_DATABASE',
      message: `no database ${JSON.stringify(db)} is served here`,
    };
  }
  return { found: true, db, pipeline: action !== undefined };
}
