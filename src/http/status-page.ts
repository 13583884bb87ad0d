/**
 * The status page every node serves at `GET /`: plain HTML and a small inline script that polls
 * `/cluster` about once a second. No build step, no external resources (operators may be offline).
 * Everything from the cluster is put in the page as text nodes, never as markup.
 */

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (char) => ESCAPES[char] ?? char);
}

/** Runs in the browser: plain ES2017, no imports. */
const SCRIPT = `
'use strict';
const POLL_MS = 1000;
const FAILOVERS_SHOWN = 20;
function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  for (const child of children || []) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}
function row(cells, attrs) {
  return el('tr', attrs, cells.map((cell) => el('td', {}, [cell === null || cell === undefined ? '' : cell])));
}
function head(names) {
  return el('thead', {}, [el('tr', {}, names.map((name) => el('th', {}, [name])))]);
}
function render(view) {
  const names = new Set();
  for (const node of view.nodes) for (const db of node.databases) names.add(db.name);
  const up = view.nodes.filter((node) => node.up).length;
  const summary = document.getElementById('summary');
  summary.textContent = view.nodes.length + ' nodes, ' + up + ' up; seen from ' + view.node +
    ' at ' + new Date(view.at).toLocaleTimeString();
  const databases = document.getElementById('databases');
  databases.replaceChildren();
  for (const name of [...names].sort()) {
    let leaderSeq = null;
    for (const node of view.nodes) for (const db of node.databases) {
      if (db.name === name && db.role === 'leader') leaderSeq = Math.max(leaderSeq ?? 0, db.seq);
    }
    const body = el('tbody');
    for (const node of view.nodes) {
      const db = node.databases.find((candidate) => candidate.name === name);
      const label = (node.node || '?') + (node.self ? ' (this node)' : '');
      if (!node.up || !db) {
        body.append(row([label, node.address, node.up ? 'up' : 'down', node.up ? 'not open' : '',
          '', '', '', '', node.error || ''],
          { 'data-node': node.node || node.address || '', 'data-up': String(node.up), 'data-role': '', class: node.up ? 'absent' : 'down' }));
        continue;
      }
      const lag = leaderSeq === null ? '' : Math.max(0, leaderSeq - db.seq);
      body.append(row([label, node.address, 'up', db.role, db.epoch, db.seq, lag, db.leader,
        db.leaseProblem || ''],
        { 'data-node': node.node || '', 'data-up': 'true', 'data-role': db.role, class: db.role }));
    }
    databases.append(el('section', { 'data-db': name }, [
      el('h2', {}, [name]),
      el('table', {}, [head(['node', 'address', 'state', 'role', 'epoch', 'sequence',
        'lag (commits)', 'leader', 'problem']), body]),
    ]));
  }
  const changes = [];
  for (const node of view.nodes) for (const change of node.transitions) {
    if (change.from === 'leader' || change.to === 'leader') changes.push(change);
  }
  changes.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
  const failovers = document.getElementById('failovers');
  failovers.replaceChildren(head(['at', 'database', 'node', 'from', 'to', 'epoch', 'reason']),
    el('tbody', {}, changes.slice(0, FAILOVERS_SHOWN).map((change) => row([change.at, change.db,
      change.node, change.from, change.to, change.epoch, change.reason]))));
}
async function poll() {
  const status = document.getElementById('status');
  try {
    const response = await fetch('cluster', { cache: 'no-store' });
    if (!response.ok) throw new Error('HTTP ' + response.status);
    render(await response.json());
    status.textContent = '';
  } catch (error) {
    status.textContent = 'this node does not answer: ' + error.message;
  }
  setTimeout(poll, POLL_MS);
}
poll();
`;

export function renderStatusPage(nodeId: string): string {
  const id = escapeHtml(nodeId);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hadb: ${id}</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f4f4f4; }
tr.leader td { background: #e6f4e6; font-weight: 600; }
tr.down td { background: #fbe9e9; color: #900; }
tr.absent td, tr.stopped td { color: #888; }
#status { color: #900; }
</style>
</head>
<body>
<h1>hadb cluster</h1>
<p id="summary">loading…</p>
<p id="status"></p>
<div id="databases"></div>
<h2>Recent failovers</h2>
<table id="failovers"></table>
<script>${SCRIPT}</script>
</body>
</html>
`;
}
