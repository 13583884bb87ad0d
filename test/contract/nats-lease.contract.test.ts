import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { openNatsLeaseStore } from '../../src/adapters/lease/nats.ts';
import type { LeaseStore } from '../../src/adapters/lease/types.ts';
import { type Relay, startNatsRelay } from '../support/relay.ts';
import { describeWithService } from '../support/services.ts';
import { leaseStoreContract } from './lease-store.contract.ts';

await describeWithService('nats', 'NATS lease store contract', (url) => {
  leaseStoreContract(async () => {
    const bucket = `hadb-contract-${randomBytes(5).toString('hex')}`;
    const store = await openNatsLeaseStore({ servers: url, bucket });
    const relays: Relay[] = [];
    return {
      store,
      openAnother: () => openNatsLeaseStore({ servers: url, bucket }),
      openDown: async () => {
        const relay = await startNatsRelay(url);
        relays.push(relay);
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
        for (const relay of relays) relay.cut();
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
