// bench/fscache: lazysnap's fscache worker against a minimal C daemon
// (cdaemon.c) serving the same 512 MiB EROFS image from a local file, cold.
// Runs inside the UML test kernel: npm run bench:fscache
// Prints READ requests/s and MB/s for both, their ratio, the reader's
// stall per failover (p50, p99; the same measure over the second before each
// kill as the control) when the worker is killed mid-read, and per
// healed hang (p50, max) when it is stopped mid-read (SIGSTOP). The cold-READ
// row from a registry: the same files as a nydus image (lazysnap convert, 1
// MiB zstd chunks, blake3) in docker-registry on the guest's 127.0.0.1,
// mounted with `lazysnap mount docker://…`, read the same way: Range GETs,
// decompression and verification against the C daemon's local file
// (BENCH_REGISTRY=0 leaves it out). BENCH_PARTS picks parts (default
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

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : 0;
}

async function main() {
  const fscacheDir = requireFscacheKernel();
  const img = await image();
  const dir = guestDir('bench');
  const c = PARTS.has('throughput') ? await baseline(img, fscacheDir, dir) : undefined;

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
  const quickStatus = async () => {
    const a = new AdminClient(d.address);
    try {
      return (await a.status()) as { worker: Record<string, any> };
    } finally {
      a.close();
    }
  };
  try {
    let l: { mbps: number; rps: number; reads: number } | undefined;
    let healthy: Record<string, any> | undefined;
    let reg: { mbps: number; rps: number; reads: number } | undefined;
    let regCurl: { mbps: number; bytes: number } | undefined;
    let regCpu = '';
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

      if (REGISTRY) {
        process.stderr.write('registry row: the OCI original\n');
        const original = await ociOriginal();
        const { startRegistry } = await import('../../test/support/registry');
        // Its storage in the guest's RAM, as the C daemon's image is: a registry serving a hot blob from its page
        // cache. On the host's disk (hostfs) every read is a UML round trip to the host, and curl got 70 MB/s.
        fs.rmSync(path.join(WORK, 'registry'), { recursive: true, force: true }); // where it was kept before
        const registry = await startRegistry({ dir: path.join(dir, 'registry') });
        try {
          // converted straight into the registry, as an operator would: the converter streams its upload
          process.stderr.write('registry row: converting into the registry\n');
          await runOk(process.execPath, [CLI, 'convert', original, `docker://${registry.host}/bench/fscache:1`],
            { timeoutMs: 900_000 });
          const rmnt = path.join(dir, 'mnt-r');
          fs.mkdirSync(rmnt);
          process.stderr.write('registry row: mounting it\n');
          await cli('mount', `docker://${registry.host}/bench/fscache:1`, rmnt);
          process.stderr.write('registry row: reading it\n');
          const w0 = (await status()).worker.stats;
          const who = { registry: registry.daemon.proc.pid!, worker: (await quickStatus()).worker.pid as number,
            lazysnapd: d.daemon.proc.pid!, reader: process.pid };
          const cpu0 = cpuSeconds(Object.values(who));
          const rr = readAll(rmnt);
          const cpu1 = cpuSeconds(Object.values(who));
          const w1 = (await status()).worker.stats;
          regCpu = Object.keys(who).map((k, i) => `${k} ${(cpu1.procs[i].cpu - cpu0.procs[i].cpu).toFixed(1)} s ` +
            `(${cpu1.procs[i].faults - cpu0.procs[i].faults} faults)`).join(', ') +
            `; all ${(cpu1.busy - cpu0.busy).toFixed(1)} of ${rr.seconds.toFixed(1)} s`;
          await cli('umount', rmnt);
          if (rr.bytes !== r.bytes) throw new Error(`read ${rr.bytes} bytes from the registry image, ${r.bytes} from the local one`);
          const n = w1.reads - w0.reads;
          reg = { mbps: rr.bytes / MB / rr.seconds, rps: n / rr.seconds, reads: n };
          regCurl = await curlLayers(registry.url, 'bench/fscache', '1');
        } finally {
          await registry.stop();
          fs.rmSync(registry.dir, { recursive: true, force: true }); // give the guest's RAM back
        }
      }
    }

    // Failover: cold reads in a child process, pass after pass on fresh mounts, while the serving worker is
    // killed until KILLS kills: 1.2 s after the last kill at the soonest, and once a loaded standby waits (the
    // successor lazysnapd keeps for the next failover), or STANDBY_WAIT_MS after the last kill without one. Each
    // kill notes which: without a loaded standby the successor is a cold worker start (seconds in UML), which no
    // handover can hide; those are printed apart, with how long a standby took to be ready after a kill.
    const kills: number[] = [];
    const standbyAtKill: string[] = [];
    const standbyReadyMs: number[] = [];
    /** per kill, lazysnapd's own measure: from the worker's end to its successor's `ready` (sent after its `restore`) */
    const handoverMs: (number | null)[] = [];
    let activationsAtKill = 0;
    /** the last kill's, from a status once its successor serves (a cold successor may not yet) */
    const noteHandover = (w: Record<string, any>) => {
      if (handoverMs.length < kills.length) handoverMs.push(w.activations > activationsAtKill ? w.lastFailoverStallMs : null);
    };
    const calls: [number, number][] = [];
    const t0 = Date.now();
    for (let pass = 0; PARTS.has('failover') && kills.length < KILLS; pass++) {
      const mnt2 = path.join(dir, `mnt-f${pass}`);
      fs.mkdirSync(mnt2);
      await cli('mount', img, mnt2, '--fsid', `bench-f${pass}`);
      const reader = spawn(process.execPath, ['-e', `(${readAllSource})(${JSON.stringify(mnt2)})`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let json = '';
      reader.stdout.on('data', (x) => (json += x));
      let running = true;
      const exited = new Promise((res) => reader.once('exit', res)).then(() => (running = false));
      while (running && kills.length < KILLS) {
        // Asked only once a kill's window (1 s, below) is over: a status call goes through lazysnapd and the serving
        // worker, and on one CPU it would land in the stall it measures.
        await new Promise((res) => setTimeout(res, kills.length ? 1200 : 300));
        const last = kills.at(-1) ?? 0;
        let w = (await quickStatus()).worker;
        noteHandover(w);
        while (running && w.standby !== 'loaded' && Date.now() - last < STANDBY_WAIT_MS) {
          await new Promise((res) => setTimeout(res, 250));
          w = (await quickStatus()).worker;
        }
        if (!running) break;
        if (w.standby === 'loaded' && last) standbyReadyMs.push(Date.now() - last);
        const pid = w.pid;
        if (!Number.isInteger(pid) || pid <= 1) throw new Error(`status gave no worker pid to kill (${pid})`);
        standbyAtKill.push(String(w.standby ?? 'none'));
        activationsAtKill = w.activations;
        kills.push(performance.timeOrigin + performance.now());
        process.kill(pid, 'SIGKILL');
      }
      await exited;
      calls.push(...(JSON.parse(json) as [number, number][]));
      await cli('umount', mnt2);
    }
    if (handoverMs.length < kills.length) noteHandover((await quickStatus()).worker);
    const failoverSeconds = (Date.now() - t0) / 1000;
    // Stall per failover: the longest read() in flight when, or starting within 1 s after, the worker died.
    const worstRead = (k: number, cs: [number, number][]) => cs.filter(([s, e]) => e >= k && s <= k + 1000)
      .map(([s, e]) => ({ ms: e - Math.max(s, k), beganAfterKillMs: Math.max(0, s - k) }))
      .reduce((a, b) => (b.ms > a.ms ? b : a), { ms: 0, beganAfterKillMs: 0 });
    const stallAfter = (k: number, cs: [number, number][]) => worstRead(k, cs).ms;
    const worstReads = kills.map((k) => worstRead(k, calls));
    const stalls = worstReads.map((r) => r.ms);
    // The control: the same measure over the second before each kill (ending 100 ms before it), where the reader was
    // reading: what one CPU's reader meets without a failover (holes at the front of the windows being filled ahead,
    // the standby's start, the bench's status calls).
    const quiet = kills.map((k) => k - 1100)
      .filter((q) => calls.some(([s, e]) => s <= q + 50 && e >= q) && !kills.some((k) => k > q - 1200 && k <= q + 1000))
      .map((q) => stallAfter(q, calls));

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
      const reader = spawn(process.execPath, ['-e', `(${readAllSource})(${JSON.stringify(mnt3)})`], { stdio: ['ignore', 'pipe', 'inherit'] });
      let json = '';
      reader.stdout.on('data', (x) => (json += x));
      let running = true;
      const exited = new Promise((res) => reader.once('exit', res)).then(() => (running = false));
      const stops: number[] = [];
      let basePid = w0.pid as number;
      let baseReads = w0.stats.reads as number;
      let stopped = 0;
      while (running && hangStalls.length + stops.length < HANGS) {
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
      await exited;
      const passCalls = JSON.parse(json) as [number, number][];
      stopsTotal += stops.length;
      for (const k of stops) if (passCalls.some(([, e]) => e >= k)) hangStalls.push(stallAfter(k, passCalls));
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
      console.log(line('lazysnap from registry', reg));
      console.log(`ratio lazysnap from the registry (nydus, zstd, blake3) / C daemon from a local file: MB/s ${(reg.mbps / c.mbps).toFixed(2)}  (goal >= 0.6)`);
      console.log(`during that read, CPU (user+system): ${regCpu}`);
      if (regCurl) {
        console.log(`curl, the image's blobs whole from the same registry: ${regCurl.mbps.toFixed(1)} MB/s (${(regCurl.bytes / MB).toFixed(0)} MiB); ` +
          `curl / C daemon ${(regCurl.mbps / c.mbps).toFixed(2)}, lazysnap from the registry / curl ${(reg.mbps / regCurl.mbps).toFixed(2)}`);
      }
    }
    const spread = (xs: number[]) => (xs.length ? `p50=${pct(xs, 50).toFixed(0)} ms p90=${pct(xs, 90).toFixed(0)} ms p99=${pct(xs, 99).toFixed(0)} ms max=${Math.max(...xs).toFixed(0)} ms` : 'none');
    const worst = (xs: number[]) => [...xs].sort((a, b) => b - a).slice(0, 5).map((x) => x.toFixed(0)).join(', ');
    if (kills.length) {
      const loaded = stalls.filter((_, i) => standbyAtKill[i] === 'loaded');
      const cold = stalls.filter((_, i) => standbyAtKill[i] !== 'loaded');
      console.log(`failover: kills=${kills.length} in ${failoverSeconds.toFixed(1)} s; stall per failover ${spread(stalls)}`);
      console.log(`failover with a loaded standby: kills=${loaded.length} ${spread(loaded)}; without (successor starting cold): kills=${cold.length} ${spread(cold)}`);
      console.log(`failover: worst five stalls ${worst(stalls)} ms; over 150 ms: ${stalls.filter((x) => x > 150).length}, over 300 ms: ${stalls.filter((x) => x > 300).length}`);
      // Where a stall falls: in the read the kill interrupted, or in a later one; and how much of it lazysnapd
      // counts as the handover (end to the successor's ready, sent after its restore), the rest being the kernel's and the reads'.
      const order = kills.map((_, i) => i).sort((a, b) => stalls[b] - stalls[a]).slice(0, 5);
      console.log('failover: the worst five, where they fell: ' + order.map((i) => `${stalls[i].toFixed(0)} ms (read began ` +
        `+${worstReads[i].beganAfterKillMs.toFixed(0)} ms after the kill; handover ${handoverMs[i] ?? '?'} ms)`).join('; '));
      console.log(`failover: lazysnapd's handover (end to the successor's ready) ${spread(handoverMs.filter((x): x is number => x !== null))}`);
      console.log(`the same measure over the second before each kill (no failover in it): n=${quiet.length} ${spread(quiet)}; ` +
        `over 150 ms: ${quiet.filter((x) => x > 150).length}, over 300 ms: ${quiet.filter((x) => x > 300).length}`);
      console.log(`a loaded standby waited again after a kill: ${spread(standbyReadyMs)}`);
    }
    if (stopsTotal) {
      console.log(`hangs: stops=${stopsTotal} healed=${w1.hangsHealed - hangsBefore} (bound ${w1.hangTimeoutMs} ms); stall per healed hang p50=${pct(hangStalls, 50).toFixed(0)} ms max=${Math.max(0, ...hangStalls).toFixed(0)} ms`);
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

// The reader, as source for `node -e`: prints [start, end] of each read() (epoch ms).
const readAllSource = `function (mnt) {
  const fs = require('fs'), path = require('path');
  const buf = Buffer.alloc(1 << 20); const calls = [];
  const now = () => performance.timeOrigin + performance.now();
  for (const name of fs.readdirSync(mnt).sort()) {
    const fd = fs.openSync(path.join(mnt, name), 'r');
    for (;;) { const s = now(); const n = fs.readSync(fd, buf, 0, buf.length, null); calls.push([s, now()]); if (n === 0) break; }
    fs.closeSync(fd);
  }
  process.stdout.write(JSON.stringify(calls));
}`;

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
