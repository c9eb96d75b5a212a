// bench/startup: time from CRI PullImage to a container's first output, and
// the bytes the registry sent for it, for every snapshotter a user would pick
// from: containerd's overlayfs pulling the OCI original in full,
// stargz-snapshotter (eStargz), soci-snapshotter (OCI + SOCI index) and
// lazysnap (nydus; on demand, with prefetch on pull, and with learned
// prefetch: a trace recorded by an earlier run, replayed on a fresh cache).
// The same registry,
// containerd and CRI client for all; directly and behind a shaping proxy
// (+20 ms RTT, 200 Mbit/s). One table per image and link; every ratio comes
// from the same run.
//   npm run bench:startup        UML guest, lazysnap's fscache backend
//   npm run bench:startup:host   host kernel, lazysnap's fanotify backend
import fs from 'node:fs';
import { join } from 'node:path';
import { buildPauseImage, startGuestContainerd } from '../../test/support/guest-containerd';
import { guestDir, requireFscacheKernel } from '../../test/support/guest';
import { pushOciLayout } from '../../test/support/images';
import { startLazysnapd, killWorkers } from '../../test/support/lazysnapd';
import { scrape, total } from '../../test/support/metrics';
import { unmountAll } from '../../test/support/tmp';
import { startRegistry } from '../../test/support/registry';
import { makeTestPki } from '../../test/support/tls';
import { startShaper } from '../fetch/shaper';
import { startDualFront } from './dual-front';
import { prepareImages, type BenchImage } from './images';
import { startSoci, startStargz, type PeerDaemon } from './peers';
import { runOk } from '../../test/support/proc';

const CLI = join(__dirname, '../../cmd/lazysnap.js');

const HOST = process.env.STARTUP_ON === 'host';

/** Bytes the registry sent for requests logged after `from` (logrus: http.response.written). */
function bytesServed(logPath: string, from: number): number {
  const text = fs.readFileSync(logPath, 'utf8').slice(from);
  let n = 0;
  for (const m of text.matchAll(/http\.response\.written=(\d+)/g)) n += Number(m[1]);
  return n;
}

/** Busy fraction of all CPUs over `ms`, from /proc/stat. */
async function busyFraction(ms: number): Promise<number> {
  const sample = () => {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  const a = sample();
  await new Promise((r) => setTimeout(r, ms));
  const b = sample();
  return b.total === a.total ? 0 : 1 - (b.idle - a.idle) / (b.total - a.total);
}

/**
 * Waits (up to 20 s) until the machine is idle, so that no contender's start
 * shares the CPU with the tail of its daemons' own start (lazysnap's Node
 * workers take seconds of CPU in the one-CPU guest).
 */
async function quiesce(): Promise<void> {
  const until = Date.now() + 20_000;
  while (Date.now() < until && (await busyFraction(250)) > 0.1);
}

/**
 * When `pattern` first shows in the container's CRI log (polled every 5 ms):
 * the container's first output, not its exit as CRI reports it (polled with
 * backoff) or the teardown after it.
 */
function firstOutput(logPath: string, pattern: RegExp): { stop(): Promise<number> } {
  let at: number | undefined;
  const timer = setInterval(() => {
    try {
      if (at === undefined && pattern.test(fs.readFileSync(logPath, 'utf8'))) at = performance.now();
    } catch {
      // not created yet
    }
  }, 5);
  return {
    stop: async () => {
      clearInterval(timer);
      if (at === undefined) throw new Error(`${logPath} never showed ${pattern}`);
      return at;
    },
  };
}

/** STARTUP_LOGS=DIR: each run's logs (daemons, containerd) are copied there before its directory goes. */
function keepLogs(sub: string, name: string): void {
  const to = process.env.STARTUP_LOGS;
  if (!to) return;
  const walk = (d: string): string[] => fs.readdirSync(d, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.log') ? [join(d, e.name)] : []);
  fs.mkdirSync(join(to, name), { recursive: true });
  for (const f of walk(sub)) fs.copyFileSync(f, join(to, name, f.slice(sub.length + 1).replace(/\//g, '_')));
}

interface Sample { ms: number; pullMs: number; bytes: number; read?: number }
interface Table { image: BenchImage; net: string; rows: { contender: Contender; samples: Sample[] }[] }

/** The sample with the median time (the upper one of an even count). */
function median(samples: Sample[]): Sample {
  return [...samples].sort((a, b) => a.ms - b.ms)[Math.floor(samples.length / 2)];
}

interface Contender {
  /** what STARTUP_CONTENDERS names it by */
  key: string;
  label: string;
  /** which of the image's pushed forms it pulls */
  form: 'oci' | 'nydus' | 'estargz';
  /** CRI's snapshotter: containerd's own, or the proxy plugin this contender starts */
  start(dir: string, image: BenchImage): Promise<{ snapshotter: string; socket?: string; stop(): Promise<void>; readBytes?(): Promise<number> }>;
}

/**
 * A lazysnapd for one run. `record`: it records the start (as a node's first
 * start of an image does by default; its reads are not widened meanwhile).
 * `trace`: the image's recorded start is loaded first (learned prefetch).
 */
function lazysnap(prefetch: 'off' | 'on-pull', fscacheDir: string | undefined, o: { record?: boolean; trace?: (image: BenchImage) => string } = {}): Contender['start'] {
  return async (dir, image) => {
    fs.mkdirSync(dir, { recursive: true });
    const root = join(dir, 'root');
    const metrics = join(dir, 'metrics.sock');
    const backend = fscacheDir
      ? `[fscache]\nenabled = true\ncache_dir = "${join(fscacheDir, `startup-${process.hrtime.bigint()}`)}"\n`
      : '[fscache]\nenabled = true\nbackend = "fanotify"\n';
    const lz = await startLazysnapd({
      root,
      address: join(dir, 'lazysnap.sock'),
      config: `root = "${root}"\n[log]\nlevel = "${process.env.STARTUP_LOG_LEVEL ?? 'warn'}"\n${backend}prefetch = "${prefetch}"\n` +
        `[learn]\nrecord = ${o.record ? 'true' : 'false'}\nwindow_ms = ${LEARN_WINDOW_MS}\n[registry]\nplain_http = true\n[metrics]\naddress = "${metrics}"\n`,
    });
    if (o.trace) await runOk(process.execPath, [CLI, 'trace', '--load', o.trace(image), '--address', lz.address], { timeoutMs: 30_000 });
    return {
      snapshotter: 'lazysnap',
      socket: lz.address,
      // what the kernel asked the worker for: the start's reads, at the kernel's readahead granularity
      readBytes: async () => {
        await new Promise((r) => setTimeout(r, 1500)); // workers report every second
        return total(await scrape(metrics), 'lazysnap_read_bytes_total');
      },
      stop: async () => {
        await lz.stop();
        await unmountAll(dir);
        killWorkers(root); // an image stays mounted, so its worker stays (by design)
      },
    };
  };
}

/** Long enough for the biggest image's start in the guest (about 10 s) */
const LEARN_WINDOW_MS = 40_000;

/**
 * Records each image's start once (direct link, fresh lazysnapd and cache),
 * for the learned-prefetch contender: `lazysnap trace --json` of it, in a file.
 */
async function recordTraces(dir: string, images: BenchImage[], host: string, fscacheDir: string | undefined): Promise<Map<BenchImage, string>> {
  const out = new Map<BenchImage, string>();
  for (const [i, image] of images.entries()) {
    const sub = join(dir, `r${i}`); // short: containerd's socket paths must stay under 104 bytes
    fs.mkdirSync(sub, { recursive: true });
    const sn = await lazysnap('off', fscacheDir, { record: true })(join(sub, 'snapshotter'), image);
    const ctrd = await startGuestContainerd({ dir: join(sub, 'containerd'), snapshotterSocket: sn.socket!, snapshotterName: 'lazysnap', criSnapshotter: 'lazysnap', registryHost: host, sandboxImage: `${host}/test/pause:1` });
    try {
      const sock = sn.socket!;
      const ref = `${host}/${image.repos.nydus}`;
      await ctrd.cri.pullImage(`${host}/test/pause:1`);
      await ctrd.cri.pullImage(ref);
      const r = await ctrd.cri.runToCompletion(ref, image.command, { logRoot: join(sub, 'logs'), name: 'record' });
      if (r.exitCode !== 0) throw new Error(`${image.name}: the recording start failed: ${r.logs}`);
      // removing the image ends the window: the trace is stored then
      await ctrd.cri.removeImage(ref);
      await ctrd.collectGarbage();
      const deadline = Date.now() + LEARN_WINDOW_MS + 30_000;
      for (;;) {
        const t = await runOk(process.execPath, [CLI, 'trace', '--json', '--address', sock], { timeoutMs: 30_000 });
        if (JSON.parse(t.stdout).length > 0) {
          const file = join(dir, `trace-${image.repos.nydus.replace(/[/:]/g, "_")}.json`);
          fs.writeFileSync(file, t.stdout);
          out.set(image, file);
          console.error(`${image.name}: recorded ${(JSON.parse(t.stdout) as { entries: unknown[] }[])[0].entries.length} chunks`);
          break;
        }
        if (Date.now() > deadline) throw new Error(`${image.name}: no trace recorded`);
        await new Promise((res) => setTimeout(res, 1000));
      }
    } finally {
      await ctrd.stop();
      await sn.stop();
      await unmountAll(sub);
      fs.rmSync(sub, { recursive: true, force: true });
    }
  }
  return out;
}

const peer = (p: Promise<PeerDaemon>) => p.then((d) => ({ snapshotter: d.name, socket: d.socket, stop: d.stop }));

async function main() {
  const fscacheDir = HOST ? undefined : requireFscacheKernel();
  const dir = HOST ? fs.mkdtempSync('/var/tmp/lazysnap-bench-startup-') : guestDir('startup');
  const registry = await startRegistry({ dir: join(dir, 'registry') });
  const pki = await makeTestPki(join(dir, 'pki'));
  const front = await startDualFront({ upstreamPort: registry.port, cert: pki.cert, key: pki.key });
  const host = `127.0.0.1:${front.port}`;
  const only = process.env.STARTUP_CONTENDERS?.split(',');
  // keys: overlayfs, stargz, soci, lazysnap-on-demand, -on-pull, -recording, -learned; "lazysnap" is all four
  const wanted = (key: string) => !only || only.some((o) => key === o || key.startsWith(`${o}-`));
  const images = await prepareImages(join(dir, 'images'), host, (process.env.STARTUP_IMAGES ?? 'busybox,debian-python,big').split(','),
    { nydus: !only || only.some((o) => o === 'lazysnap' || o.startsWith('lazysnap-')), estargz: wanted('stargz'), soci: wanted('soci') });
  const pause = await buildPauseImage(join(dir, 'pause'));
  await pushOciLayout(pause.layoutDir, pause.ref, `http://${host}`, 'test/pause:1');

  const shaper = await startShaper({ upstreamHost: '127.0.0.1', upstreamPort: front.port, delayMs: 10, bitsPerSec: 200e6, windowBytes: 4 << 20 });
  const shapedHost = `127.0.0.1:${(shaper.address() as { port: number }).port}`;

  const LEARNED = 'lazysnap (nydus, learned prefetch)';
  const traces = wanted('lazysnap-learned') ? await recordTraces(join(dir, 'traces'), images, host, fscacheDir) : new Map<BenchImage, string>();
  const contenders: Contender[] = [
    { key: 'overlayfs', label: 'overlayfs (OCI, full pull)', form: 'oci', start: async () => ({ snapshotter: 'overlayfs', stop: async () => {} }) },
    { key: 'stargz', label: 'stargz (eStargz)', form: 'estargz', start: (d) => peer(startStargz(d)) },
    { key: 'soci', label: 'soci (OCI + SOCI index)', form: 'oci', start: (d) => peer(startSoci(d, pki.caPath)) },
    { key: 'lazysnap-on-demand', label: 'lazysnap (nydus, on demand)', form: 'nydus', start: lazysnap('off', fscacheDir) },
    // the fanotify backend does not prefetch (fscache only): on the host this would repeat the row above
    ...(fscacheDir ? [{ key: 'lazysnap-on-pull', label: 'lazysnap (nydus, prefetch on pull)', form: 'nydus' as const, start: lazysnap('on-pull', fscacheDir) }] : []),
    // a first start recorded (`[learn] record = true`: its reads fetch only what they ask)
    { key: 'lazysnap-recording', label: 'lazysnap (nydus, first start, recording)', form: 'nydus', start: lazysnap('off', fscacheDir, { record: true }) },
    { key: 'lazysnap-learned', label: LEARNED, form: 'nydus', start: lazysnap('off', fscacheDir, { trace: (image) => traces.get(image)! }) },
  ];
  const chosen = contenders.filter((c) => wanted(c.key));

  const repeat = Number(process.env.STARTUP_REPEAT ?? 3);
  const tables: Table[] = [];
  let runNo = 0;
  for (const image of images) {
    for (const [net, regHost] of [['direct', host], ['20 ms RTT, 200 Mbit/s', shapedHost]] as const) {
      const samples = new Map<Contender, Sample[]>(chosen.map((c) => [c, []]));
      // rounds interleave the contenders, so that a drift of the machine touches all alike
      for (let round = 0; round < repeat; round++) {
        for (const c of chosen) {
          const sub = join(dir, `run-${runNo++}`);
          fs.mkdirSync(sub);
          const sn = await c.start(join(sub, 'snapshotter'), image);
          const ctrd = await startGuestContainerd({
            dir: join(sub, 'containerd'),
            snapshotterSocket: sn.socket ?? join(sub, 'unused.sock'),
            snapshotterName: sn.socket ? sn.snapshotter : 'unused',
            criSnapshotter: sn.snapshotter,
            registryHost: regHost,
            sandboxImage: `${regHost}/test/pause:1`,
          });
          try {
            // the sandbox image is not what is measured: pull it first
            await ctrd.cri.pullImage(`${regHost}/test/pause:1`);
            const ref = `${regHost}/${image.repos[c.form]}`;
            await quiesce();
            const logFrom = fs.statSync(registry.logPath).size;
            const t0 = performance.now();
            await ctrd.cri.pullImage(ref);
            const pulled = performance.now();
            const output = firstOutput(join(sub, 'logs', 'startup', 'startup.log'), /ready/);
            const r = await ctrd.cri.runToCompletion(ref, image.command, { logRoot: join(sub, 'logs'), name: 'startup' });
            const ms = (await output.stop()) - t0;
            if (r.exitCode !== 0 || !/ready/.test(r.stdout)) throw new Error(`${image.name}, ${c.label}: container failed: ${r.logs}`);
            samples.get(c)!.push({ ms, pullMs: pulled - t0, bytes: bytesServed(registry.logPath, logFrom), read: await sn.readBytes?.() });
            console.error(`${image.name} | ${net} | ${c.label}: ${sec(ms)} (pull ${sec(pulled - t0)}, ` +
              `pod ${sec(r.timings.podMs)}, create ${sec(r.timings.createMs)}, start ${sec(r.timings.startMs)})`);
          } finally {
            await ctrd.stop();
            await sn.stop();
            await unmountAll(sub);
            keepLogs(sub, `${image.repos.oci.replace(/[/:]/g, '_')}-${runNo}`);
            fs.rmSync(sub, { recursive: true, force: true }); // containerd's content and snapshots of this run; in the guest /run is memory
          }
        }
      }
      const rows = chosen.map((c) => ({ contender: c, samples: samples.get(c)! }));
      tables.push({ image, net, rows });
    }
  }
  shaper.close();
  front.close();
  await registry.stop();
  if (process.env.STARTUP_LOGS) fs.copyFileSync(registry.logPath, join(process.env.STARTUP_LOGS, 'registry.log'));
  if (HOST) fs.rmSync(dir, { recursive: true, force: true });
  printTables(tables, repeat);
}

const sec = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

function printTables(tables: Table[], repeat: number): void {
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  console.log(`bench/startup ${new Date().toISOString().slice(0, 10)}: CRI PullImage -> the container's first output, ` +
    `${HOST ? 'host kernel, lazysnap fanotify backend' : 'UML guest, lazysnap fscache backend'}; median of ${repeat} runs (min-max)`);
  for (const { image, net, rows } of tables) {
    const med = rows.map((r) => ({ ...r, m: median(r.samples) }));
    const base = med.find((r) => r.contender.label.startsWith('overlayfs'));
    const read = med.find((r) => r.m.read !== undefined)?.m.read;
    console.log(`\n### ${image.name}: ${mib(image.ociBytes)} compressed, ${mib(image.rootfsBytes)} unpacked; ${net}`);
    if (image.startReadBytes) console.log(`measured when the image was built: the start reads ${mib(image.startReadBytes)} (${((100 * image.startReadBytes) / image.rootfsBytes).toFixed(1)}%, page cache of a fresh EROFS mount)`);
    if (read !== undefined) console.log(`the start read ${mib(read)} of the image (${((100 * read) / image.rootfsBytes).toFixed(1)}%, lazysnap's READ bytes on demand)`);
    console.log('| snapshotter | pull to first output | (min-max) | of which pull | vs overlayfs | bytes from the registry | fetched ÷ read |');
    console.log('| --- | --- | --- | --- | --- | --- | --- |');
    for (const r of med) {
      const times = r.samples.map((x) => x.ms);
      console.log(`| ${r.contender.label} | ${sec(r.m.ms)} | ${sec(Math.min(...times))}-${sec(Math.max(...times))} | ${sec(r.m.pullMs)} | ` +
        `${base ? `${(base.m.ms / r.m.ms).toFixed(2)}×` : '-'} | ${mib(r.m.bytes)} | ${read ? (r.m.bytes / read).toFixed(2) : '-'} |`);
    }
    const by = (prefix: string) => med.find((r) => r.contender.label.startsWith(prefix))?.m;
    const learned = by('lazysnap (nydus, learned');
    const onDemand = by('lazysnap (nydus, on demand');
    const whole = by('lazysnap (nydus, prefetch on pull');
    if (learned && onDemand) {
      console.log(`learned prefetch: ${(onDemand.ms / learned.ms).toFixed(2)}× as fast as on demand${whole ? `, ${(whole.ms / learned.ms).toFixed(2)}× as fast as whole-image prefetch` : ''}; ` +
        `${(learned.bytes / onDemand.bytes).toFixed(2)}× on demand's bytes`);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
