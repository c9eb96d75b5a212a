// One 127.0.0.1 port that speaks both HTTPS and plain HTTP to the same
// registry. soci-snapshotter 0.4.1 fetches its index over HTTPS whatever the
// host (its artifact client has no plain-HTTP setting) but fetches layers
// over plain HTTP from any loopback host (containerd's MatchLocalhost), so no
// single-protocol registry on 127.0.0.1 serves it. The first bytes decide: a
// TLS handshake record starts with 0x16, an HTTP request with a letter. TLS
// goes through a TLS terminator on a port of its own, so every hop is a plain
// byte pipe.
import net from 'node:net';
import tls from 'node:tls';

const TLS_HANDSHAKE = 0x16;

const listen = async (s: net.Server) => {
  await new Promise<void>((resolve, reject) => s.once('error', reject).listen(0, '127.0.0.1', () => resolve()));
  return (s.address() as net.AddressInfo).port;
};

/** Pipes a and b both ways, destroying both when either ends. */
function splice(a: net.Socket, b: net.Socket): void {
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', close).on('close', close);
  b.on('error', close).on('close', close);
  a.pipe(b);
  b.pipe(a);
}

export interface DualFront {
  port: number;
  close(): void;
}

export async function startDualFront(o: { upstreamPort: number; cert: string; key: string }): Promise<DualFront> {
  const terminator = tls.createServer({ cert: o.cert, key: o.key }, (clear) => splice(clear, net.connect(o.upstreamPort, '127.0.0.1')));
  const tlsPort = await listen(terminator);
  const front = net.createServer((client) => {
    client.on('error', () => client.destroy());
    client.once('data', (first: Buffer) => {
      const upstream = net.connect(first[0] === TLS_HANDSHAKE ? tlsPort : o.upstreamPort, '127.0.0.1');
      upstream.write(first);
      splice(client, upstream);
    });
  });
  const port = await listen(front);
  return {
    port,
    close: () => {
      front.close();
      terminator.close();
    },
  };
}
