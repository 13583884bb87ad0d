/**
 * Error messages that go to clients say what failed, not where: peer URLs, IP addresses and host
 * names of the cluster stay on the server (logged there). A client holds a token, not a map of
 * the cluster.
 */

export const HIDDEN_ADDRESS = '<internal address>';

const URL_IN_TEXT = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>(),;]+/gi;
const IPV6 = /\[[0-9a-f:.%]+\](?::\d+)?/gi;
const IPV4 = /\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g;
/** Node's resolver errors name the host they could not find. */
const RESOLVER = /\b(ENOTFOUND|EAI_AGAIN|EAI_FAIL)\s+[^\s"'<>(),;]+/g;

/** `message` with every URL, IP address (and port) and unresolved host name replaced. */
export function withoutAddresses(message: string): string {
  return message
    .replace(URL_IN_TEXT, (url) => {
      // A sentence may go on right after the URL: keep its punctuation.
      const tail = /[.:]+$/.exec(url)?.[0] ?? '';
      return `${HIDDEN_ADDRESS}${tail}`;
    })
    .replace(IPV6, HIDDEN_ADDRESS)
    .replace(IPV4, HIDDEN_ADDRESS)
    .replace(RESOLVER, `$1 ${HIDDEN_ADDRESS}`);
}
