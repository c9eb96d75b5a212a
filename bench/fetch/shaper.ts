// A TCP proxy on 127.0.0.1 that shapes traffic like a WAN link: every chunk
// is delayed by `delayMs` in each direction (RTT = 2 × delayMs) and the
// server→client direction is paced to `mbit` Mbit/s, one link shared by all
// connections (bytes queue behind each other, as on a real bottleneck). A
// connection with more than `windowBytes` queued pauses its upstream socket,
// standing in for TCP flow control. Runs as its own process so the fetcher's
// CPU work does not disturb its timers.
//
//   node dist/bench/fetch/shaper.js --upstream 127.0.0.1:5000 [--delay-ms 10] [--mbit 200] [--window 4194304]
// prints "listening <port>" on stdout once ready.
import net from 'node:net';

interface ShaperOptions {
  upstreamHost: string;
  upstreamPort: number;
  delayMs: number;
  /** link rate, bits per second, server→client */
  bitsPerSec: number;
  windowBytes: number;
}

const SLICE = 16 * 1024;

/**
 * Delivers buffers in order, each no earlier than its due time. One timer per
 * direction: separate setTimeouts with different delays can fire out of
 * order (a first version did, and reordered TCP data).
 */
class DelayLine {
  private readonly q: Array<{ at: number; data: Buffer }> = [];
  private timer: NodeJS.Timeout | undefined;
  queued = 0;
  constructor(private readonly write: (b: Buffer) => void, private readonly onDrain: () => void) {}

  push(at: number, data: Buffer): void {
    this.q.push({ at, data });
    this.queued += data.length;
    if (!this.timer) this.arm();
  }

  get lastAt(): number {
    return this.q.length ? this.q[this.q.length - 1].at : 0;
  }

  private arm(): void {
    const head = this.q[0];
    if (!head) return;
    this.timer = setTimeout(() => this.fire(), Math.max(0, head.at - performance.now()));
  }

  private fire(): void {
    this.timer = undefined;
    const now = performance.now();
    while (this.q.length && this.q[0].at <= now + 0.5) {
      const { data } = this.q.shift()!;
      this.queued -= data.length;
      this.write(data);
    }
    this.onDrain();
    this.arm();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.q.length = 0;
  }
}

export function startShaper(o: ShaperOptions): Promise<net.Server> {
  // when the shared downlink is free again (ms, performance.now() clock)
  let linkFree = 0;
  const server = net.createServer((client) => {
    client.setNoDelay(true);
    const up = net.connect({ host: o.upstreamHost, port: o.upstreamPort });
    up.setNoDelay(true);
    let paused = false;
    let upClosed = false;
    const down = new DelayLine((b) => {
      if (!client.destroyed) client.write(b);
    }, () => {
      if (paused && down.queued < o.windowBytes / 2) {
        paused = false;
        up.resume();
      }
      if (upClosed && down.queued === 0) client.end();
    });
    const upward = new DelayLine((b) => {
      if (!up.destroyed) up.write(b);
    }, () => undefined);
    const kill = () => {
      down.stop();
      upward.stop();
      client.destroy();
      up.destroy();
    };
    client.on('error', kill);
    up.on('error', kill);
    client.on('close', kill);
    // the FIN travels behind the last queued byte
    up.on('end', () => {
      upClosed = true;
      if (down.queued === 0) setTimeout(() => client.end(), o.delayMs);
    });

    // client → server: delay only
    client.on('data', (b: Buffer) => upward.push(performance.now() + o.delayMs, b));
    // server → client: serialise on the shared link, then the propagation delay
    up.on('data', (b: Buffer) => {
      for (let off = 0; off < b.length; off += SLICE) {
        const part = b.subarray(off, Math.min(b.length, off + SLICE));
        linkFree = Math.max(linkFree, performance.now()) + (part.length * 8 * 1000) / o.bitsPerSec;
        down.push(linkFree + o.delayMs, part);
      }
      if (!paused && down.queued > o.windowBytes) {
        paused = true;
        up.pause();
      }
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function arg(name: string, def?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && process.argv[i + 1] !== undefined) return process.argv[i + 1];
  if (def === undefined) throw new Error(`--${name} is required`);
  return def;
}

if (require.main === module) {
  const [h, p] = arg('upstream').split(':');
  if (h !== '127.0.0.1' && h !== 'localhost') throw new Error('the shaper only proxies to 127.0.0.1');
  startShaper({
    upstreamHost: '127.0.0.1',
    upstreamPort: Number(p),
    delayMs: Number(arg('delay-ms', '10')),
    bitsPerSec: Number(arg('mbit', '200')) * 1e6,
    windowBytes: Number(arg('window', String(4 << 20))),
  }).then((s) => {
    process.stdout.write(`listening ${(s.address() as net.AddressInfo).port}\n`);
  }, (e) => {
    process.stderr.write(`${e}\n`);
    process.exit(1);
  });
}
