/**
 * The status page in a real browser: three `hadb worker` processes, the page of one of them, and
 * the leader killed under it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, afterEach, expect, it } from 'vitest';
import { ClusterDriver } from '../../src/cli/cluster-driver.ts';
import { describeWithChromium } from '../support/browser.ts';

const DB = 'kv';
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-status-page-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let running: ClusterDriver | null = null;
let browser: Browser | null = null;
afterEach(async () => {
  await browser?.close();
  browser = null;
  await running?.close(3000);
  running = null;
});

interface Row {
  node: string;
  up: string;
  role: string;
}

function rowsOf(page: Page): Promise<Row[]> {
  return page.$$eval(`section[data-db="${DB}"] tbody tr`, (rows) =>
    rows.map((row) => ({
      node: row.getAttribute('data-node') ?? '',
      up: row.getAttribute('data-up') ?? '',
      role: row.getAttribute('data-role') ?? '',
    })),
  );
}

async function until(page: Page, what: string, check: (rows: Row[]) => boolean): Promise<Row[]> {
  const deadline = Date.now() + 20_000;
  let rows: Row[] = [];
  while (Date.now() < deadline) {
    rows = await rowsOf(page);
    if (check(rows)) return rows;
    await page.waitForTimeout(200);
  }
  throw new Error(`the page did not show ${what}; it shows ${JSON.stringify(rows)}`);
}

describeWithChromium('status page', (executablePath) => {
  it('shows every node, one leader, and the new leader after a SIGKILL', {
    timeout: 90_000,
  }, async () => {
    const addresses = new Map<string, string>();
    running = new ClusterDriver({
      dir: path.join(root, 'cluster'),
      nodes: 3,
      dbs: [DB],
      statusIntervalMs: 0,
      onMessage: (message) => {
        if (message.type === 'ready' && message.address) {
          addresses.set(message.node, message.address);
        }
      },
    });
    const nodes = running;
    await nodes.start();
    const leader = await nodes.waitForLeader(DB);
    // The page of a follower, which stays up when the leader is killed.
    const watched = nodes.nodeIds.find((id) => id !== leader.node) as string;
    browser = await chromium.launch({ executablePath, headless: true });
    const page = await browser.newPage();
    await page.goto(`${addresses.get(watched)}/`);
    expect(await page.title()).toBe(`hadb: ${watched}`);

    const before = await until(page, 'three nodes up and one leader', (rows) => {
      return (
        rows.length === 3 &&
        rows.every((row) => row.up === 'true') &&
        rows.filter((row) => row.role === 'leader').length === 1
      );
    });
    expect(before.map((row) => row.node).sort()).toEqual(nodes.nodeIds);
    expect(before.find((row) => row.role === 'leader')?.node).toBe(leader.node);
    expect(await page.textContent('#summary')).toContain(`seen from ${watched}`);

    await nodes.kill(leader.node);
    const after = await until(page, 'a new leader and the old one down', (rows) => {
      const leaders = rows.filter((row) => row.role === 'leader');
      return (
        rows.length === 3 &&
        rows.some((row) => row.node === leader.node && row.up === 'false') &&
        leaders.length === 1 &&
        leaders[0]?.node !== leader.node
      );
    });
    const newLeader = after.find((row) => row.role === 'leader')?.node;
    expect(newLeader).toBe((await nodes.waitForLeader(DB)).node);
    // The failover is in the page's recent failovers, taken from the new leader's transitions.
    const failovers = () =>
      page.$$eval('#failovers tbody tr', (rows) =>
        rows.map((row) => [...row.children].map((cell) => cell.textContent)),
      );
    const deadline = Date.now() + 10_000;
    let shown = await failovers();
    // Columns: at, database, node, from, to.
    while (!shown.some((cells) => cells[2] === newLeader && cells[4] === 'leader')) {
      if (Date.now() > deadline) throw new Error(`no failover to ${newLeader} in ${shown}`);
      await page.waitForTimeout(200);
      shown = await failovers();
    }
  });
});
