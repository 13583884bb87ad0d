/** Loopback network helpers: a TCP relay a test can silence or cut, and a free port. */
import * as net from 'node:net';

/** A port nothing listens on: it was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export interface Relay {
  /** The relay's own port: point the client here instead of at the service. */
  port: number;
  /** Keeps the connections open but silently drops every byte, both ways. */
  freeze(): void;
  /** Drops the connections and refuses new ones. */
  cut(): void;
}

export async function startRelay(target: { host: string; port: number }): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  let frozen = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => {
        if (!frozen) to.write(chunk);
      });
      from.on('error', () => to.destroy());
      from.on('close', () => to.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('relay has no port');
  return {
    port: address.port,
    freeze: () => {
      frozen = true;
    },
    cut: () => {
      server.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** A relay to the NATS server at `url`, and the URL that reaches it through the relay. */
export async function startNatsRelay(url: string): Promise<Relay & { url: string }> {
  const upstream = new URL(url);
  const relay = await startRelay({ host: upstream.hostname, port: Number(upstream.port || 4222) });
  return { ...relay, url: `nats://127.0.0.1:${relay.port}` };
}
