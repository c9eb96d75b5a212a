// bench/fanotify: the fanotify backend on the host's own kernel (npm run
// bench:fanotify). One nydus image of 512 MiB (8 files of random bytes,
// made by lazysnap convert) read in 1 MiB reads:
//   native:     its blobs fully present, mounted file-backed with no marks
//               (read cold, then warm);
//   cold-local: through lazysnapd's fanotify worker, filled from the local
//               nydus blob (decompressed and verified chunk by chunk);
//   cold-registry: the same image pushed to docker-registry on 127.0.0.1
//               and mounted with `lazysnap mount docker://…`: filled by
//               Range GETs through the chunk fetcher;
//   warm:       the same mount read again (complete blobs lose their marks);
//               each warm figure is the median of 7 reads.
//   failover:   cold-local passes on fresh mounts while the serving worker
//               is SIGKILLed, BENCH_KILLS times (default 100; 0 leaves it
//               out): the stall per kill and its control (bench/failover.ts).
// Page caches are dropped before each cold read. Prints MB/s, events per
// MiB, and the ratios warm / native warm (goal >= 0.95: a complete blob has
// lost its mark, so nothing is left in the way) and cold-local / native cold.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startLazysnapd } from '../../test/support/lazysnapd';
import { runOk } from '../../test/support/proc';
import { nydusFromDir } from '../../test/support/nydus-from-dir';
import { readNydusLayout, rebuildBlobs, mountErofsFile } from '../../test/support/oci-layout';
import { AdminClient } from '../../cmd/admin-client';
import { failoverReport, killDuringReads } from '../failover';
import { median } from '../stats';

const MB = 2 ** 20;
const IMAGE_MB = Number(process.env.BENCH_IMAGE_MB ?? 512);
const WORK = `/var/tmp/lazysnap-bench-fanotify-${IMAGE_MB}m`;
const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');
const KILLS = Number(process.env.BENCH_KILLS ?? 100);
const WARM_READS = 7;

async function image(): Promise<{ ref: string; boot: string; raw: string[] }> {
  const layout = path.join(WORK, 'img', 'nydus');
  const boot = path.join(WORK, 'image.boot');
  const rawDir = path.join(WORK, 'raw');
  if (!fs.existsSync(path.join(WORK, 'done'))) {
    fs.rmSync(WORK, { recursive: true, force: true });
    const src = path.join(WORK, 'src');
    fs.mkdirSync(src, { recursive: true });
    for (let i = 0; i < 8; i++) fs.writeFileSync(path.join(src, `f${i}`), crypto.randomBytes((IMAGE_MB / 8) * MB));
    await nydusFromDir(src, path.join(WORK, 'img'));
    fs.rmSync(src, { recursive: true }); // the image holds it
    const n = await readNydusLayout(layout, 'nydus');
    fs.writeFileSync(boot, n.bootstrap);
    fs.mkdirSync(rawDir);
    await rebuildBlobs(n.bootstrap, n.blobsDir, rawDir);
    fs.writeFileSync(path.join(WORK, 'done'), '');
  }
  const n = await readNydusLayout(layout, 'nydus');
  const { Bootstrap } = await import('../../image/rafs/bootstrap');
  const raw = new Bootstrap(n.bootstrap).blobs.map((b) => path.join(rawDir, `${b.blobId}.raw`));
  return { ref: `oci:${layout}:nydus`, boot, raw };
}

function dropCaches(): void {
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** Reads every file under mnt in 1 MiB reads; MB/s. */
function readAll(mnt: string): { mbps: number; bytes: number } {
  const buf = Buffer.alloc(MB);
  let bytes = 0;
  const t0 = performance.now();
  for (const name of fs.readdirSync(mnt).sort()) {
    const fd = fs.openSync(path.join(mnt, name), 'r');
    for (let n; (n = fs.readSync(fd, buf, 0, MB, null)) > 0; ) bytes += n;
    fs.closeSync(fd);
  }
  return { mbps: bytes / MB / ((performance.now() - t0) / 1000), bytes };
}

/**
 * A warm read, timed as the median of WARM_READS: from the page cache one read of the image takes 25-45 ms here,
 * and single reads of the same mount swung by 25%.
 */
function warmRead(mnt: string): { mbps: number; bytes: number } {
  const runs = Array.from({ length: WARM_READS }, () => readAll(mnt));
  return { mbps: median(runs.map((r) => r.mbps)), bytes: runs[0].bytes };
}

async function main() {
  const img = await image();
  const dir = fs.mkdtempSync(path.join(WORK, 'run-'));
  try {
    // native: complete blobs, no marks, no daemon
    const nmnt = path.join(dir, 'native');
    fs.mkdirSync(nmnt);
    await mountErofsFile(img.boot, nmnt, img.raw);
    dropCaches();
    const native = readAll(nmnt);
    const nativeWarm = warmRead(nmnt);
    await runOk('umount', [nmnt]);

    const root = path.join(dir, 'root');
    const d = await startLazysnapd({
      root,
      address: path.join(dir, 'snap.sock'),
      config: `root = "${root}"\n[log]\nlevel = "warn"\n[fscache]\nenabled = true\nbackend = "fanotify"\nprefetch = "off"\n[admin]\nmount_dirs = ["${dir}"]\n`,
    });
    try {
      const cli = async (...a: string[]) => (await runOk(process.execPath, [CLI, ...a, '--address', d.address], { timeoutMs: 600_000 })).stdout;
      const mnt = path.join(dir, 'lazy');
      fs.mkdirSync(mnt);
      await cli('mount', img.ref, mnt);
      dropCaches();
      let cold, warm, s;
      try {
        cold = readAll(mnt);
        s = JSON.parse(await cli('status', '--json')).worker.stats;
        warm = warmRead(mnt);
      } finally {
        await cli('umount', mnt);
      }
      // the same image from a registry
      const { startRegistry } = await import('../../test/support/registry');
      const { pushOciLayout } = await import('../../test/support/images');
      const registry = await startRegistry({ dir: path.join(dir, 'registry') });
      let reg, rs;
      try {
        await pushOciLayout(img.ref.split(':')[1], 'nydus', registry.url, 'bench/fanotify:1');
        const rmnt = path.join(dir, 'reg');
        fs.mkdirSync(rmnt);
        await cli('mount', `docker://${registry.host}/bench/fanotify:1`, rmnt);
        const before = JSON.parse(await cli('status', '--json')).worker.stats;
        try {
          dropCaches();
          reg = readAll(rmnt);
          const after = JSON.parse(await cli('status', '--json')).worker.stats;
          rs = { events: after.events - before.events, fills: after.fills - before.fills };
        } finally {
          await cli('umount', rmnt);
        }
      } finally {
        await registry.stop();
      }
      // failover: the same cold read from the local blob, pass after pass, while the serving worker is killed
      const admin = new AdminClient(d.address);
      let failover: string[] = [];
      try {
        if (KILLS > 0) {
          failover = failoverReport(await killDuringReads({
            kills: KILLS,
            standbyWaitMs: 20_000,
            status: () => admin.status({ brief: true }) as Promise<{ worker: Record<string, any> }>,
            mount: async (pass) => {
              const m = path.join(dir, `failover-${pass}`);
              fs.mkdirSync(m);
              await cli('mount', img.ref, m, '--fsid', `bench-f${pass}`);
              dropCaches();
              return m;
            },
            umount: async (m) => void await cli('umount', m),
          }));
        }
      } finally {
        admin.close();
      }
      const mib = cold.bytes / MB;
      const out = [
        `fanotify bench: ${new Date().toISOString().slice(0, 10)}, ${mib.toFixed(0)} MiB image, kernel ${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}`,
        `native (complete blobs, file-backed EROFS, no marks): cold ${native.mbps.toFixed(0)} MB/s, warm ${nativeWarm.mbps.toFixed(0)} MB/s`,
        `cold-local (fanotify, filled from the local nydus blob): ${cold.mbps.toFixed(0)} MB/s, ${s.events} events (${(s.events / mib).toFixed(1)} per MiB), ${s.fills} fills on demand, ${s.fillsAhead} ahead, ${s.eventsDenied} denied`,
        `cold-registry (fanotify, Range GETs from docker-registry on 127.0.0.1): ${reg.mbps.toFixed(0)} MB/s, ${rs.events} events, ${rs.fills} fills`,
        `warm (the same mount again; both warm figures the median of ${WARM_READS} reads): ${warm.mbps.toFixed(0)} MB/s`,
        `ratios: warm/native-warm ${(warm.mbps / nativeWarm.mbps).toFixed(2)} (goal >= 0.95), cold-local/native-cold ${(cold.mbps / native.mbps).toFixed(2)}, cold-registry/native-cold ${(reg.mbps / native.mbps).toFixed(2)}`,
        ...failover,
      ];
      process.stdout.write(out.join('\n') + '\n');
      if (cold.bytes !== native.bytes || warm.bytes !== native.bytes || reg.bytes !== native.bytes) throw new Error(`read ${cold.bytes}/${warm.bytes} bytes, native ${native.bytes}`);
    } finally {
      await d.stop();
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench/fanotify: ${(e as Error).stack}\n`);
  process.exit(1);
});
