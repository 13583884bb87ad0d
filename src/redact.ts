/**
 * What may be printed of a setting or a URL: the one redaction used wherever hadb shows
 * configuration or echoes a URL back (CLI output, error messages, `hadb explain`).
 */

const LOOKS_SECRET = /secret|token|pass|pwd|credential|signature|key|auth|cookie/i;
export const REDACTED = '***';

/** True when a setting's name says its value is a secret (`HADB_CLUSTER_PASS`, `apiToken`). */
export function looksSecret(name: string): boolean {
  return LOOKS_SECRET.test(name);
}

/** `value` as it may be shown: secrets by name replaced, and secrets inside URLs removed. */
export function redactSetting(name: string, value: unknown): unknown {
  if (looksSecret(name)) return REDACTED;
  if (typeof value === 'string') return redactUrl(value);
  if (Array.isArray(value)) return value.map((item) => redactSetting(name, item));
  if (typeof value === 'object' && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([key, inner]) => [key, redactSetting(key, inner)]),
    );
  }
  return value;
}

/**
 * A URL without its user information (`u:PASSWORD@`, with or without a scheme), its fragment and
 * the values of query parameters whose names look secret (of all of them with `allQueryValues`).
 * Text that is not a URL comes back unchanged.
 */
export function redactUrl(text: string, options: { allQueryValues?: boolean } = {}): string {
  // `u:p@host:7000`, a node address without a scheme, holds credentials too.
  if (!/^\s*[A-Za-z][A-Za-z0-9+.-]*:/.test(text) && !/^[^/?#\s]*@/.test(text)) return text;
  return text
    .replace(/^(\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^/?#\s]*@/, `$1${REDACTED}@`)
    .replace(/#.*$/s, `#${REDACTED}`)
    .replace(/([?&])([^=&#]*)=([^&#]*)/g, (whole, separator: string, name: string) =>
      options.allQueryValues || looksSecret(decodeQueryName(name))
        ? `${separator}${name}=${REDACTED}`
        : whole,
    );
}

function decodeQueryName(name: string): string {
  try {
    return decodeURIComponent(name);
  } catch {
    return name;
  }
}

/** `text` with every `scheme://…` URL in it redacted as {@link redactUrl} does. */
export function redactUrlsIn(text: string): string {
  return text.replace(/[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s'"<>]+/g, (url) => redactUrl(url));
}
