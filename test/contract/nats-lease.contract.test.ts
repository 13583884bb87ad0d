import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { openNatsLeaseStore } from '../../src/adapters/lease/nats.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import { describeWithService } from '../support/services.ts';
import { leaseStoreContract } from './lease-store.contract.ts';

await describeWithService('nats', 'NATS lease store contract', (url) => {
  leaseStoreContract(async () => {
    const bucket = `hadb-contract-${randomBytes(5).toString('hex')}`;
    const store = await openNatsLeaseStore({ servers: url, bucket });
    const relays: net.Server[] = [];
    return {
      store,
      openAnother: () => openNatsLeaseStore({ servers: url, bucket }),
      openDown: async () => {
        const relay = await startRelay(url);
        relays.push(relay.server);
        let disconnected: () => void = () => {};
        const down = new Promise<void>((resolve) => {
          disconnected = resolve;
        });
        const client: LeaseStore = await openNatsLeaseStore({
          servers: relay.url,
          bucket,
          onEvent: (event) => {
            if (event.type === 'disconnected') disconnected();
          },
        });
        // The only way in goes away, and stays away: NATS is down for this client.
        relay.cut();
        await down;
        return client;
      },
      async cleanup() {
        await store.close();
        for (const relay of relays) relay.close();
        const nc = await connect({ servers: url });
        try {
          await (await jetstreamManager(nc)).streams.delete(`KV_${bucket}`);
        } finally {
          await nc.close();
        }
      },
    };
  });
});

/** A TCP relay to NATS; `cut()` drops its connections and refuses new ones. */
async function startRelay(upstreamUrl: string): Promise<{
  url: string;
  server: net.Server;
  cut(): void;
}> {
  const upstream = new URL(upstreamUrl);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const target = net.connect({ host: upstream.hostname, port: Number(upstream.port || 4222) });
    for (const [from, to] of [
      [client, target],
      [target, client],
    ] as const) {
      sockets.add(from);
      from.pipe(to);
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('relay has no port');
  return {
    url: `nats://127.0.0.1:${address.port}`,
    server,
    cut: () => {
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}
