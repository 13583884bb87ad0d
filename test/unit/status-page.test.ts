import { describe, expect, test } from 'vitest';
import { normalizePeer } from '../../src/http/cluster-view.ts';
import { escapeHtml, renderStatusPage } from '../../src/http/status-page.ts';

describe('the status page', () => {
  test('escapes what it puts in the markup, and builds the rest as text nodes', () => {
    expect(escapeHtml(`<a href="x">&'`)).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;');
    const page = renderStatusPage('<script>alert(1)</script>');
    expect(page).toContain('<title>hadb: &lt;script&gt;alert(1)&lt;/script&gt;</title>');
    expect(page).not.toContain('innerHTML');
    expect(page).not.toMatch(/https?:\/\//);
  });

  test('peers are plain http(s) origins', () => {
    expect(normalizePeer('http://10.0.0.5:7000/')).toBe('http://10.0.0.5:7000');
    expect(normalizePeer('https://node-1.internal:443')).toBe('https://node-1.internal');
    expect(normalizePeer('file:///etc/passwd')).toBeNull();
    expect(normalizePeer('http://user:pw@host:1')).toBeNull();
    expect(normalizePeer('http://host:1/?x=1')).toBeNull();
    expect(normalizePeer('not a url')).toBeNull();
    expect(normalizePeer(null)).toBeNull();
  });
});
