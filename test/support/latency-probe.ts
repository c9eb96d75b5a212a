// A second client of lazysnapd in a process of its own, that Stats one key
// in a loop and reports its slowest answer: how long "everybody else" waited
// while a test's request ran. Its own process, so that what it measures is
// the daemon, not the test's event loop decoding the other answers.
import { fork, type ChildProcess } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { snapshotsService } from '../../proto/load';

export interface ProbeReport {
  /** calls answered while probing */
  count: number;
  worstMs: number;
  /** calls that failed (each counts as slow) */
  errors: string[];
}

/** Between one answer and the next call. */
const GAP_MS = 5;

type FromParent = { cmd: 'begin' } | { cmd: 'end' };
type ToParent = { ready: true } | { report: ProbeReport };

export class LatencyProbe {
  private constructor(private readonly child: ChildProcess) {}

  /** Starts the probe process; it has made one call (connected, warm) when this resolves. */
  static async start(address: string, key: string): Promise<LatencyProbe> {
    const child = fork(__filename, [address, key], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', (m: ToParent) => ('ready' in m ? resolve() : reject(new Error('probe: unexpected message'))));
      child.once('exit', (code) => reject(new Error(`probe exited (${code}) before it was ready`)));
    });
    child.removeAllListeners('exit');
    return new LatencyProbe(child);
  }

  /** Starts measuring. */
  begin(): void {
    this.child.send({ cmd: 'begin' } satisfies FromParent);
  }

  /** Stops measuring (after the call in flight) and reports. */
  end(): Promise<ProbeReport> {
    return new Promise((resolve) => {
      this.child.once('message', (m: ToParent) => 'report' in m && resolve(m.report));
      this.child.send({ cmd: 'end' } satisfies FromParent);
    });
  }

  close(): void {
    this.child.kill();
  }
}

if (require.main === module) {
  const [address, key] = process.argv.slice(2);
  const Ctor = snapshotsService();
  const c = new Ctor(`unix://${address}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as any;
  const stat = () =>
    new Promise<void>((resolve, reject) =>
      c.Stat({ snapshotter: 'lazysnap', key }, { deadline: Date.now() + 10_000 }, (err: Error | null) => (err ? reject(err) : resolve())),
    );
  let probing = false;
  let report: ProbeReport = { count: 0, worstMs: 0, errors: [] };
  let loop: Promise<void> = Promise.resolve();
  const send = (m: ToParent) => process.send!(m);
  process.on('message', (m: FromParent) => {
    if (m.cmd === 'begin') {
      report = { count: 0, worstMs: 0, errors: [] };
      probing = true;
      loop = (async () => {
        while (probing) {
          const t = performance.now();
          await stat().catch((e: Error) => report.errors.push(e.message));
          report.worstMs = Math.max(report.worstMs, performance.now() - t);
          report.count++;
          // a client, not a load generator: spinning would take the CPU the request under test needs
          await new Promise((r) => setTimeout(r, GAP_MS));
        }
      })();
    } else {
      probing = false;
      void loop.then(() => send({ report }));
    }
  });
  process.on('disconnect', () => process.exit(0));
  stat().then(
    () => send({ ready: true }),
    (e: Error) => {
      process.stderr.write(`probe: ${e.message}\n`);
      process.exit(1);
    },
  );
}
