/**
 * `--transitions` and `--inspect` on `hadb worker` and `hadb serve`: a node process writes its role
 * transitions as JSON lines and sends the state machines of the chosen databases, and only those,
 * to an inspector.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import type { Transition } from '../../src/api-types.ts';
import { ClusterDriver } from '../../src/cli/cluster-driver.ts';
import { hadb, spawnHadb, watch } from './support/cli.ts';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'hadb-worker-observe-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
let running: ClusterDriver | null = null;
let server: WebSocketServer | null = null;
afterEach(async () => {
  await running?.close(3000);
  running = null;
  for (const client of server?.clients ?? []) client.terminate();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
  server = null;
});

async function inspectorServer(): Promise<{ url: string; received: Received[] }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  server = wss;
  await new Promise((resolve) => wss.once('listening', resolve));
  const { port } = wss.address() as { port: number };
  const received: Received[] = [];
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      const text = String(data);
      received.push({ type: (JSON.parse(text) as { type: string }).type, text });
    });
  });
  return { url: `ws://127.0.0.1:${port}`, received };
}

interface Received {
  type: string;
  text: string;
}

describe('observing worker processes', () => {
  it('--inspect sends the chosen database only; --transitions writes every role change', {
    timeout: 60_000,
  }, async () => {
    const { url, received } = await inspectorServer();

    const dir = path.join(root, 'cluster');
    const transitionsOf = (id: string) => path.join(dir, 'transitions', `${id}.jsonl`);
    running = new ClusterDriver({
      dir,
      nodes: 2,
      dbs: ['inspected', 'hidden'],
      statusIntervalMs: 0,
      workerArgs: (id) => [
        '--transitions',
        transitionsOf(id),
        // Only node-1 is inspected, and only its `inspected` database.
        ...(id === 'node-1' ? ['--inspect', 'inspected', '--inspect-url', url] : []),
      ],
    });
    const nodes = running;
    await nodes.start();
    const leader = await nodes.waitForLeader('inspected');
    const deadline = Date.now() + 15_000;
    while (!received.some((event) => event.type === '@xstate.snapshot')) {
      if (Date.now() > deadline) throw new Error('no snapshot reached the inspector');
      await sleep(50);
    }
    // A handoff makes both nodes' machines move again, the hidden database's too.
    nodes.workers.get(leader.node)?.send({ cmd: 'handoff' });
    await nodes.until(
      () => {
        const now = nodes.leaderOf('inspected');
        return now !== null && now.epoch > leader.epoch ? now : null;
      },
      15_000,
      'a new leader of inspected',
    );
    await sleep(500);

    const types = new Set(received.map((event) => event.type));
    expect(types).toContain('@xstate.actor');
    expect(types).toContain('@xstate.event');
    const actors = received
      .filter((event) => event.type === '@xstate.actor')
      .map((event) => JSON.parse(event.text) as { snapshot?: { context?: { db?: string } } });
    expect(actors.some((actor) => actor.snapshot?.context?.db === 'inspected')).toBe(true);
    // Nothing of the other database, nor of the node not asked to inspect.
    expect(received.filter((event) => event.text.includes('hidden'))).toEqual([]);
    const contexts = received
      .map((event) => JSON.parse(event.text) as { snapshot?: { context?: object } })
      .flatMap((event) => (event.snapshot?.context ? [event.snapshot.context] : []));
    expect(contexts.length).toBeGreaterThan(0);
    for (const context of contexts) {
      expect(context).toMatchObject({ db: 'inspected', node: 'node-1' });
    }

    for (const id of nodes.nodeIds) {
      const lines = fs
        .readFileSync(transitionsOf(id), 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Transition);
      expect(lines.every((line) => line.node === id)).toBe(true);
      for (const db of ['inspected', 'hidden']) {
        const own = lines.filter((line) => line.db === db);
        expect(own[0]).toMatchObject({ from: null, to: 'bootstrapping' });
        for (let i = 1; i < own.length; i++) expect(own[i]?.from).toBe(own[i - 1]?.to);
      }
    }
    const ofLeader = fs.readFileSync(transitionsOf(leader.node), 'utf8').trim().split('\n');
    expect(ofLeader.map((line) => JSON.parse(line) as Transition)).toContainEqual(
      expect.objectContaining({
        db: 'inspected',
        from: 'leader',
        to: 'demoting',
        epoch: leader.epoch,
        reason: 'handoff',
      }),
    );
  });

  it('hadb serve takes the same flags', { timeout: 60_000 }, async () => {
    const { url, received } = await inspectorServer();
    const dir = path.join(root, 'serve');
    const transitions = path.join(dir, 'transitions.jsonl');
    const args = [
      'serve',
      '--id',
      'solo',
      '--data',
      path.join(dir, 'data'),
      '--storage',
      pathToFileURL(path.join(dir, 'storage')).href,
      '--leases',
      pathToFileURL(path.join(dir, 'leases')).href,
      '--db',
      'one',
      'two',
      '--listen',
      '127.0.0.1:0',
      '--no-auth',
      '--transitions',
      transitions,
    ];
    const env = { HADB_SECRET: 'a-cluster-secret-of-the-test' };
    // Inspecting a database that is not opened is a mistake, said before anything starts.
    const refused = await hadb([...args, '--inspect', 'three'], { cwd: root, env });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('--inspect names databases not opened: three');

    const child = spawnHadb([...args, '--inspect', 'two', '--inspect-url', url], {
      cwd: root,
      env,
    });
    const watched = watch(child);
    try {
      await watched.waitForLine((line) => line.includes('"listening"'));
      const deadline = Date.now() + 15_000;
      const led = () =>
        fs.existsSync(transitions) &&
        ['one', 'two'].every((db) =>
          fs
            .readFileSync(transitions, 'utf8')
            .includes(`"db":"${db}","node":"solo","from":"candidate","to":"leader"`),
        );
      while (!led() || !received.some((event) => event.text.includes('"value":{"leader"'))) {
        if (Date.now() > deadline) throw new Error(`no leader seen: ${received.length} events`);
        await sleep(50);
      }
      expect(received.some((event) => event.text.includes('"db":"two"'))).toBe(true);
      expect(received.filter((event) => event.text.includes('"db":"one"'))).toEqual([]);
    } finally {
      child.kill('SIGTERM');
      await watched.done;
    }
  });
});
