// bench/fscache: lazysnap's fscache worker against a minimal C daemon
// (cdaemon.c) serving the same 512 MiB EROFS image from a local file, cold.
// Runs inside the UML test kernel: npm run bench:fscache
// Prints READ requests/s and MB/s for both, their ratio, the reader's
// stall per failover (p50, p99; the same measure over the second before each
// kill as the control) when the worker is killed mid-read, and per
// healed hang (p50, max) when it is stopped mid-read (SIGSTOP). The cold-READ
// rows from a registry: the same files as a nydus image (lazysnap convert, 1
// MiB zstd chunks, blake3) in docker-registry on the guest's 127.0.0.1,
// mounted as `lazysnap mount docker://…` does and read the same way: Range
// GETs, decompression and verification against the C daemon's local file,
// with prefetch off and "on-pull", each timed from the mount's start, and
// each twice on fresh mounts: the worker's first image, then its second
// (BENCH_REGISTRY=0 leaves them out, BENCH_REGISTRY_PREFETCH=off keeps one,
// BENCH_REGISTRY_READS sets the reads). BENCH_PARTS picks parts (default
// throughput,failover,hangs).
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startLazysnapd } from '../../test/support/lazysnapd';
import { runOk } from '../../test/support/proc';
import { curlDownload } from '../curl';
import { GUEST_MOUNT_DIRS, guestDir, mkfsErofs, requireFscacheKernel } from '../../test/support/guest';
import { AdminClient } from '../../cmd/admin-client';
import { DEFAULT_HOSTS_DIR } from '../../registry/hosts';
import { failoverReport, killDuringReads, readInChild, worstRead } from '../failover';
import { percentile } from '../stats';

const MB = 2 ** 20;
const IMAGE_MB = Number(process.env.BENCH_IMAGE_MB ?? 512);
const KILLS = Number(process.env.BENCH_KILLS ?? 100);
const HANGS = Number(process.env.BENCH_HANGS ?? 10);
const STANDBY_WAIT_MS = Number(process.env.BENCH_STANDBY_WAIT_MS ?? 20_000);
const WORK = `/var/tmp/lazysnap-bench-fscache-${IMAGE_MB}m`;
const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const HERE_SRC = path.resolve(__dirname, '../../../bench/fscache');
const REGISTRY = process.env.BENCH_REGISTRY !== '0';
const PARTS = new Set((process.env.BENCH_PARTS ?? 'throughput,failover,hangs').split(','));
/** the registry rows' prefetch settings, in order */
const REGISTRY_PREFETCH = (process.env.BENCH_REGISTRY_PREFETCH ?? 'off,on-pull').split(',') as ('off' | 'on-pull')[];
/** cold reads of the registry image per row, each on a fresh mount: the worker's first image, then ones after */
const REGISTRY_READS = Number(process.env.BENCH_REGISTRY_READS ?? 2);

/** The image's files as an OCI layout with one uncompressed layer (cached beside the image); its ref. */
async function ociOriginal(): Promise<string> {
  const ref = `oci:${path.join(WORK, 'oci')}:latest`;
  if (!fs.existsSync(path.join(WORK, 'oci-done'))) {
    const { ociFromDir } = await import('../../test/support/nydus-from-dir');
    fs.rmSync(path.join(WORK, 'oci'), { recursive: true, force: true });
    await ociFromDir(path.join(WORK, 'src'), path.join(WORK, 'oci'));
    fs.writeFileSync(path.join(WORK, 'oci-done'), '');
  }
  return ref;
}

async function image(): Promise<string> {
  const img = path.join(WORK, 'image.erofs');
  if (!fs.existsSync(path.join(WORK, 'done'))) {
    fs.rmSync(WORK, { recursive: true, force: true });
    const src = path.join(WORK, 'src');
    fs.mkdirSync(src, { recursive: true });
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(src, `f${i}`), crypto.randomBytes((IMAGE_MB / 8) * MB));
    await mkfsErofs(img, src);
    fs.writeFileSync(path.join(WORK, 'done'), '');
  }
  return img;
}

interface ReadStats {
  bytes: number;
  seconds: number;
  /** [start, end] ms of every read() call */
  calls: [number, number][];
}

/** Reads every file under mnt in 1 MiB reads. */
function readAll(mnt: string): ReadStats {
  const buf = Buffer.alloc(MB);
  const calls: [number, number][] = [];
  let bytes = 0;
  const t0 = performance.now();
  for (const name of fs.readdirSync(mnt).sort()) {
    const fd = fs.openSync(path.join(mnt, name), 'r');
    for (;;) {
      const s = performance.now();
      const n = fs.readSync(fd, buf, 0, MB, null);
      calls.push([s, performance.now()]);
      if (n === 0) break;
      bytes += n;
    }
    fs.closeSync(fd);
  }
  return { bytes, seconds: (performance.now() - t0) / 1000, calls };
}

async function baseline(img: string, cacheRoot: string, dir: string): Promise<{ mbps: number; rps: number; reads: number }> {
  const bin = path.join(dir, 'cdaemon');
  execFileSync('gcc', ['-O2', '-o', bin, path.join(HERE_SRC, 'cdaemon.c')]);
  const cache = path.join(cacheRoot, 'bench-c');
  fs.mkdirSync(cache, { recursive: true });
  // The same storage lazysnap reads from: lazysnapd serves its copy of the image on the guest's tmpfs, and a
  // pread from the host's disk (hostfs) costs a UML round trip to the host that one from guest RAM does not.
  const local = path.join(dir, 'c-image.erofs');
  fs.copyFileSync(img, local);
  const d = spawn(bin, [cache, 'bench-c', local], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  d.stdout.on('data', (x) => (out += x));
  await new Promise<void>((r) => d.stdout.once('data', () => r()));
  const mnt = path.join(dir, 'mnt-c');
  fs.mkdirSync(mnt);
  await runOk('mount', ['-t', 'erofs', '-o', 'ro,fsid=bench-c', 'none', mnt]);
  const r = readAll(mnt);
  await runOk('umount', [mnt]);
  d.kill('SIGTERM');
  await new Promise((res) => d.once('exit', res));
  fs.rmSync(cache, { recursive: true, force: true }); // give the guest's RAM back
  fs.rmSync(local, { force: true });
  const reads = Number(/reads=(\d+)/.exec(out)?.[1] ?? NaN);
  return { mbps: r.bytes / MB / r.seconds, rps: reads / r.seconds, reads };
}

/** Every layer of repo:tag downloaded whole by curl, one after another: what the registry serves in this guest. */
async function curlLayers(url: string, repo: string, tag: string): Promise<{ mbps: number; bytes: number }> {
  const accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
  const res = await fetch(`${url}/v2/${repo}/manifests/${tag}`, { headers: { accept } });
  if (!res.ok) throw new Error(`manifest of ${repo}:${tag}: HTTP ${res.status}`);
  const layers = ((await res.json()) as { layers?: { digest: string }[] }).layers ?? [];
  if (!layers.length) throw new Error(`manifest of ${repo}:${tag} names no layers`);
  let seconds = 0;
  let bytes = 0;
  for (const l of layers) {
    const got = await curlDownload(`${url}/v2/${repo}/blobs/${l.digest}`);
    seconds += got.seconds;
    bytes += got.bytes;
  }
  return { mbps: bytes / MB / seconds, bytes };
}

/** Per pid (its threads included; zeros once gone): CPU seconds (user+system) and minor page faults; and the CPU
 * seconds of the whole machine but idle and iowait. In UML a page fault is a round trip to the host, so the count
 * says where a guest process's time goes. (The test kernel has no CONFIG_TASK_IO_ACCOUNTING: no syscall counts.) */
function cpuSeconds(pids: number[]): { procs: { cpu: number; faults: number }[]; busy: number } {
  const TICK = 100; // USER_HZ
  const procs = pids.map((pid) => {
    try {
      // the fields after the ")" that ends comm: state is [0], so minflt (field 10) is [7], utime and stime [11], [12]
      const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return { cpu: (Number(f[11]) + Number(f[12])) / TICK, faults: Number(f[7]) };
    } catch {
      return { cpu: 0, faults: 0 };
    }
  });
  const c = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = c.reduce((a, b) => a + b, 0) - c[3] - c[4];
  return { procs, busy: busy / TICK };
}

interface RegistryRow {
  prefetch: 'off' | 'on-pull';
  /** which read of the worker's: its first image, or one after */
  nth: number;
  /** over the mount and the read */
  mbps: number;
  rps: number;
  reads: number;
  mountSeconds: number;
  readSeconds: number;
  cpu: string;
}

/**
 * The image's files converted into docker-registry on the guest's 127.0.0.1, then read cold under each prefetch
 * setting, each by a lazysnapd of its own: off (READs alone fetch) and the default "on-pull" (the mount starts
 * fetching the blobs whole); REGISTRY_READS times each, on fresh mounts. Each clock starts as the mount does: an
 * on-pull prefetch fetches from the mount on.
 */
async function registryRows(fscacheDir: string, dir: string): Promise<{ rows: RegistryRow[]; curl: { mbps: number; bytes: number } }> {
  process.stderr.write('registry rows: the OCI original\n');
  const original = await ociOriginal();
  const { startRegistry } = await import('../../test/support/registry');
  // Its storage in the guest's RAM, as the C daemon's image is: a registry serving a hot blob from its page
  // cache. On the host's disk (hostfs) every read is a UML round trip to the host, and curl got 70 MB/s.
  fs.rmSync(path.join(WORK, 'registry'), { recursive: true, force: true }); // where it was kept before
  const registry = await startRegistry({ dir: path.join(dir, 'registry') });
  try {
    // converted straight into the registry, as an operator would: the converter streams its upload
    process.stderr.write('registry rows: converting into the registry\n');
    const ref = `docker://${registry.host}/bench/fscache:1`;
    await runOk(process.execPath, [CLI, 'convert', original, ref], { timeoutMs: 900_000 });
    const rows: RegistryRow[] = [];
    for (const prefetch of REGISTRY_PREFETCH) {
      const name = `bench-r-${prefetch}`;
      const cache = path.join(fscacheDir, name);
      const root = path.join(dir, `root-${name}`);
      const rd = await startLazysnapd({
        root,
        logPath: path.join(WORK, `lazysnapd-${name}.log`),
        address: path.join(dir, `${name}.sock`),
        config: `root = "${root}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\ncache_dir = "${cache}"\n` +
          `prefetch = "${prefetch}"\n${GUEST_MOUNT_DIRS}`,
      });
      try {
        const admin = new AdminClient(rd.address);
        try {
          // a worker that has served nothing yet reports no stats
          const worker = async () => ((await admin.status()) as { worker: { pid: number; stats?: { reads: number } } }).worker;
          for (let nth = 1; nth <= REGISTRY_READS; nth++) {
            const mnt = path.join(dir, `mnt-${name}-${nth}`); // a fresh fsid: a new volume, new cache files, cold
            fs.mkdirSync(mnt);
            process.stderr.write(`registry rows: prefetch ${prefetch}: mounting and reading (${nth} of ${REGISTRY_READS})\n`);
            const w0 = await worker();
            const who = { registry: registry.daemon.proc.pid!, worker: w0.pid, lazysnapd: rd.daemon.proc.pid!, reader: process.pid };
            const cpu0 = cpuSeconds(Object.values(who));
            const t0 = performance.now();
            await mountFromRegistry(admin, ref, mnt);
            const mountSeconds = (performance.now() - t0) / 1000;
            const r = readAll(mnt);
            const seconds = (performance.now() - t0) / 1000;
            const cpu1 = cpuSeconds(Object.values(who));
            const reads = ((await worker()).stats?.reads ?? 0) - (w0.stats?.reads ?? 0);
            await admin.umount(mnt);
            if (r.bytes !== IMAGE_MB * MB) throw new Error(`read ${r.bytes} bytes from the registry image (prefetch ${prefetch}), not ${IMAGE_MB} MiB`);
            const cpu = Object.keys(who).map((k, i) => `${k} ${(cpu1.procs[i].cpu - cpu0.procs[i].cpu).toFixed(1)} s ` +
              `(${cpu1.procs[i].faults - cpu0.procs[i].faults} faults)`).join(', ') +
              `; all ${(cpu1.busy - cpu0.busy).toFixed(1)} of ${seconds.toFixed(1)} s`;
            rows.push({ prefetch, nth, mbps: r.bytes / MB / seconds, rps: reads / seconds, reads, mountSeconds, readSeconds: r.seconds, cpu });
          }
        } finally {
          admin.close();
        }
      } finally {
        await rd.stop();
        fs.rmSync(cache, { recursive: true, force: true }); // give the guest's RAM back
        fs.rmSync(root, { recursive: true, force: true });
      }
    }
    return { rows, curl: await curlLayers(registry.url, 'bench/fscache', '1') };
  } finally {
    await registry.stop();
    fs.rmSync(registry.dir, { recursive: true, force: true });
  }
}

/**
 * What `lazysnap mount docker://…` does, in this process: a CLI start in the guest takes seconds, which no
 * container start through containerd pays.
 */
async function mountFromRegistry(admin: AdminClient, ref: string, mnt: string): Promise<void> {
  const { openImageArg } = await import('../../cmd/image-arg');
  const img = await openImageArg(ref, { hostsDir: DEFAULT_HOSTS_DIR, pathOnly: true });
  await img.close();
  const bootstrap = `${mnt}.boot`;
  fs.writeFileSync(bootstrap, img.bootstrap);
  try {
    await admin.mount({ bootstrap, mountpoint: mnt, blobs_dir: '', domain: '', fsid: '', image_ref: img.imageRef ?? '' });
  } finally {
    fs.rmSync(bootstrap, { force: true });
  }
}

async function main() {
  const fscacheDir = requireFscacheKernel();
  const img = await image();
  const dir = guestDir('bench');
  const c = PARTS.has('throughput') ? await baseline(img, fscacheDir, dir) : undefined;
  const reg = c && REGISTRY ? await registryRows(fscacheDir, dir) : undefined;

  const root = path.join(dir, 'root');
  const d = await startLazysnapd({
    root,
    logPath: path.join(WORK, 'lazysnapd.log'),
    address: path.join(dir, 'snap.sock'),
    config: `root = "${root}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\ncache_dir = "${path.join(fscacheDir, 'bench-l')}"\n${GUEST_MOUNT_DIRS}`,
  });
  // a daemon that dies mid-bench says how, with the kernel's last words (fatal signals logged)
  try {
    fs.writeFileSync('/proc/sys/kernel/print-fatal-signals', '1');
  } catch { /* not this kernel */ }
  const died = d.daemon.exited.then((how) => {
    let dmesg = '';
    try {
      dmesg = execFileSync('dmesg', { encoding: 'utf8' }).split('\n').slice(-25).join('\n');
    } catch { /* no dmesg */ }
    return `lazysnapd exited (code ${how.code}, signal ${how.signal}); the kernel's log ends:\n${dmesg}`;
  });
  const cli = async (...a: string[]) => (await runOk(process.execPath, [CLI, ...a, '--address', d.address], { timeoutMs: 600_000 })).stdout;
  const status = async () => JSON.parse(await cli('status', '--json'));
  // In-process: a CLI start in the guest takes seconds, longer than a pass.
  const quickStatus = async (opts: { brief?: boolean } = {}) => {
    const a = new AdminClient(d.address);
    try {
      return (await a.status(opts)) as { worker: Record<string, any> };
    } finally {
      a.close();
    }
  };
  try {
    let l: { mbps: number; rps: number; reads: number } | undefined;
    let healthy: Record<string, any> | undefined;
    if (c) {
      const mnt = path.join(dir, 'mnt-l');
      fs.mkdirSync(mnt);
      await cli('mount', img, mnt, '--fsid', 'bench-l');
      const before = (await status()).worker.stats.reads;
      const r = readAll(mnt);
      const reads = (await status()).worker.stats.reads - before;
      await cli('umount', mnt);
      l = { mbps: r.bytes / MB / r.seconds, rps: reads / r.seconds, reads };
      healthy = (await quickStatus()).worker;
    }

    // Failover: cold reads while the serving worker is killed, KILLS times (bench/failover.ts).
    const run = PARTS.has('failover') ? await killDuringReads({
      kills: KILLS,
      standbyWaitMs: STANDBY_WAIT_MS,
      // brief: the whole status asks the serving worker, which would then answer it inside the stalls measured
      status: () => quickStatus({ brief: true }),
      mount: async (pass) => {
        const mnt = path.join(dir, `mnt-f${pass}`);
        fs.mkdirSync(mnt);
        await cli('mount', img, mnt, '--fsid', `bench-f${pass}`);
        return mnt;
      },
      umount: async (mnt) => void await cli('umount', mnt),
    }) : undefined;

    // Healed hangs: during cold passes the serving worker is stopped (SIGSTOP) once it has served READs of the pass;
    // lazysnapd notices the silence, kills it and fails over, and the next worker is stopped again once it serves.
    // Several per pass, since each mount costs lazysnapd a copy of the image. Stall: as above, from the stop; a stop
    // after the pass's last read held no reader and is not counted.
    const hangStalls: number[] = [];
    let stopsTotal = 0;
    const hangsBefore = (await quickStatus()).worker.hangsHealed as number;
    for (let pass = 0; PARTS.has('hangs') && hangStalls.length < HANGS; pass++) {
      const mnt3 = path.join(dir, `mnt-h${pass}`);
      fs.mkdirSync(mnt3);
      await cli('mount', img, mnt3, '--fsid', `bench-h${pass}`);
      const w0 = (await quickStatus()).worker;
      const reader = readInChild(mnt3);
      const stops: number[] = [];
      let basePid = w0.pid as number;
      let baseReads = w0.stats.reads as number;
      let stopped = 0;
      while (reader.running() && hangStalls.length + stops.length < HANGS) {
        await new Promise((res) => setTimeout(res, 20));
        const w = (await quickStatus()).worker;
        if (!w.pid || w.pid === stopped || w.hung || w.error) continue;
        // A new worker first finishes the reads the hang held; stopped at once, one read() would span two hangs.
        if (w.pid !== basePid) {
          [basePid, baseReads] = [w.pid, Infinity];
          setTimeout(() => basePid === w.pid && (baseReads = -1), 1000);
        }
        if (baseReads === -1) baseReads = w.stats?.reads ?? 0;
        if ((w.stats?.reads ?? 0) <= baseReads) continue;
        stops.push(performance.timeOrigin + performance.now());
        process.kill(w.pid, 'SIGSTOP');
        stopped = w.pid;
      }
      const passCalls = await reader.calls;
      stopsTotal += stops.length;
      for (const k of stops) if (passCalls.some(([, e]) => e >= k)) hangStalls.push(worstRead(k, passCalls).ms);
      await cli('umount', mnt3);
    }
    const w1 = (await quickStatus()).worker;
    const line = (name: string, x: { mbps: number; rps: number; reads: number }) =>
      `${name.padEnd(22)} ${x.mbps.toFixed(1).padStart(8)} MB/s ${x.rps.toFixed(0).padStart(8)} READ/s  (${x.reads} READs)`;
    console.log(`bench/fscache: ${IMAGE_MB} MiB EROFS image from a local file, cold, 1 MiB sequential reads, UML guest`);
    if (c && l) {
      console.log(line('C daemon (baseline)', c));
      console.log(line('lazysnap worker', l));
      // READ/s are not compared: lazysnap fills ahead of a sequential reader, so the kernel sends it far fewer READs
      console.log(`ratio lazysnap/C: MB/s ${(l.mbps / c.mbps).toFixed(2)}  (goal >= 0.95; READs: lazysnap ${l.reads}, C ${c.reads})`);
    }
    if (c && reg) {
      console.log(`from the guest's registry (nydus, 1 MiB zstd chunks, blake3), cold: the clock starts as the mount does ` +
        `(manifest, bootstrap, mount) and stops at the last byte read; the C daemon's clock is its read alone`);
      for (const x of reg.rows) {
        console.log(`${line(`registry, prefetch ${x.prefetch}, the worker's ${x.nth === 1 ? 'first image' : `image ${x.nth}`}`, x)}  ` +
          `(mount ${x.mountSeconds.toFixed(2)} s, read ${x.readSeconds.toFixed(1)} s)`);
        console.log(`  ratio to the C daemon from a local file: MB/s ${(x.mbps / c.mbps).toFixed(2)}` +
          `${x.prefetch === 'off' ? '  (goal >= 0.6)' : ''}; to curl ${(x.mbps / reg.curl.mbps).toFixed(2)}`);
        console.log(`  CPU (user+system) from the mount's start: ${x.cpu}`);
      }
      console.log(`curl, the image's blobs whole from the same registry: ${reg.curl.mbps.toFixed(1)} MB/s (${(reg.curl.bytes / MB).toFixed(0)} MiB); ` +
        `curl / C daemon ${(reg.curl.mbps / c.mbps).toFixed(2)}`);
    }
    if (run) console.log(failoverReport(run).join('\n'));
    if (stopsTotal) {
      console.log(`hangs: stops=${stopsTotal} healed=${w1.hangsHealed - hangsBefore} (bound ${w1.hangTimeoutMs} ms); stall per healed hang p50=${percentile(hangStalls, 50).toFixed(0)} ms max=${Math.max(0, ...hangStalls).toFixed(0)} ms`);
    }
    if (healthy) {
      console.log(`healthy worker under the throughput run: worst silence ${healthy.worstSilenceMs} ms, worst event-loop stall ${healthy.worstLoopStallMs} ms; over the whole bench: ${w1.worstSilenceMs} ms, ${w1.worstLoopStallMs} ms`);
    }
  } catch (e) {
    const why = await Promise.race([died, new Promise((r) => setTimeout(() => r('lazysnapd still runs'), 3000))]);
    throw new Error(`${(e as Error).message}\n${why}`);
  } finally {
    await d.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
