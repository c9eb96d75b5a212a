#!/usr/bin/env node
// lazysnap: the command-line tool for operators.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Command } from 'commander';
import { DEFAULT_CONFIG_TOML, SYSTEM_CONFIG, configFile, loadConfig } from '../config/config';
import { DEFAULT_HOSTS_DIR } from '../registry/hosts';
import { DEFAULT_JOBS } from '../image/convert/defaults';
import { VERSION } from './version';
import type { ImageArgOptions } from './image-arg';
import type { ConvertCliOptions } from './convert';
import type { OptimizeCliOptions } from './optimize';
import type { PullCliOptions } from './pull';
import type { AdminClient } from './admin-client';
import type { BlobStatus } from '../admin/service';
import type { Inventory } from '../admin/inventory';

// Each command loads its own modules when it runs (import() below): loading every command's (gRPC, the registry
// client, the converter) cost 0.2 s of each start, `lazysnap status` included, which tests run once per kill.

const program = new Command('lazysnap')
  .description('lazysnap command-line tool')
  .version(VERSION, '-v, --version', 'print the version and exit')
  .exitOverride()
  // usage errors are one line too ("(Did you mean …?)" joins it); subcommands inherit this
  .configureOutput({ outputError: (str, write) => write(`lazysnap: ${str.trim().replace(/\s*\n\s*/g, ' ')}\n`) });

const config = program.command('config').description('configuration helpers');
config
  .command('default')
  .description('print the embedded default config')
  .action(() => {
    process.stdout.write(DEFAULT_CONFIG_TOML);
  });
config
  .command('check <file>')
  .description('validate a config file and print the effective config as JSON')
  .action((file: string) => {
    process.stdout.write(JSON.stringify(loadConfig(file), null, 2) + "\n");
  });

/** What inspect and mount take as IMAGE, and the options for each form. */
const IMAGE_FORMS = 'IMAGE is a bootstrap file (its blobs beside it, or in --blobs), a converted image in an OCI layout (oci:DIR[:TAG], or the layout\'s path), or one in a registry (docker://HOST/REPO[:TAG|@DIGEST])';
const imageOptions = (c: Command) => c
  .option('--blobs <dir>', "directory holding the data blobs, named by blob id (default: the bootstrap's directory, or the layout's blobs)")
  .option('--user <user:pass>', 'docker://: registry credentials (default: docker config.json)')
  .option('--plain-http', 'docker://: http:// for a registry with no hosts.toml (loopback ones always are)')
  .option('--hosts-dir <dir>', "docker://: containerd's hosts.toml directory", DEFAULT_HOSTS_DIR);

imageOptions(program
  .command('inspect <image>')
  .description(`print a RAFS v6 bootstrap: superblock, blobs, file tree; --verify reads and checks every chunk of every blob. ${IMAGE_FORMS}`))
  .option('--verify', 'read, decompress and check the digest of every chunk of every blob (local, or Range GETs from the registry)')
  .option('--json', 'print JSON')
  .action(async (image: string, opts: ImageArgOptions & { verify?: boolean; json?: boolean }) => {
    const { inspect } = await import('./inspect');
    process.exitCode = await inspect(image, opts);
  });

/** For the commands that talk to lazysnapd: its socket from --address, else from the config lazysnapd reads. */
const ADDRESS_HELP = `lazysnapd socket (default: "address" of --config, or of ${SYSTEM_CONFIG} if it exists, else /run/lazysnap/snapshotter.sock)`;
const CONFIG_HELP = `lazysnapd's config file, for its socket (default ${SYSTEM_CONFIG} if it exists)`;

const withClient = async <T>(o: { address?: string; config?: string }, fn: (c: AdminClient) => Promise<T>): Promise<T> => {
  const { AdminClient } = await import('./admin-client');
  const c = new AdminClient(o.address ?? loadConfig(configFile(o.config, fs.existsSync)).address);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
};

imageOptions(program
  .command('mount <image> <dir>')
  .description(`mount an image's rootfs read-only through the running lazysnapd, lazily. ${IMAGE_FORMS}: its blobs are then fetched on demand by lazysnapd, with the registry settings of its config`))
  .option('--domain <id>', 'shared fscache domain_id: blobs used by several images are fetched once')
  .option('--fsid <id>', 'fscache fsid (default: derived from the image and the mountpoint)')
  .option('--address <socket>', ADDRESS_HELP)
  .option('--config <file>', CONFIG_HELP)
  .action(async (image: string, dir: string, o: ImageArgOptions & { domain?: string; fsid?: string; address?: string; config?: string }) => {
    const { openImageArg } = await import('./image-arg');
    const img = await openImageArg(image, { ...o, pathOnly: true });
    await img.close();
    // lazysnapd keeps its own copy of the bootstrap; one from a layout or a registry goes through a temporary file
    const tmp = img.bootstrapFile ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-mount-'));
    try {
      const bootstrap = img.bootstrapFile ?? path.join(tmp!, 'image.boot');
      if (tmp) fs.writeFileSync(bootstrap, img.bootstrap);
      const r = await withClient(o, (c) =>
        c.mount({ bootstrap, mountpoint: path.resolve(dir), blobs_dir: img.blobsDir ?? '', domain: o.domain ?? '', fsid: o.fsid ?? '', image_ref: img.imageRef ?? '' }),
      );
      process.stdout.write(`mounted ${dir} (fsid ${r.fsid}${r.domain ? `, domain ${r.domain}` : ''})\n`);
    } finally {
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

program
  .command('umount <dir>')
  .description('unmount a lazysnap mount')
  .option('--address <socket>', ADDRESS_HELP)
  .option('--config <file>', CONFIG_HELP)
  .action(async (dir: string, o: { address?: string; config?: string }) => {
    await withClient(o, (c) => c.umount(path.resolve(dir)));
  });

program
  .command('status')
  .description('mounts, fscache objects and the worker')
  .option('--json', 'print JSON')
  .option('--brief', 'lazysnapd and the worker\'s health only, without asking the worker or measuring the cache (for a probe)')
  .option('--address <socket>', ADDRESS_HELP)
  .option('--config <file>', CONFIG_HELP)
  .action(async (o: { json?: boolean; brief?: boolean; address?: string; config?: string }) => {
    const s = await withClient(o, (c) => c.status({ brief: o.brief }));
    if (o.json) return void process.stdout.write(JSON.stringify(s, null, 2) + '\n');
    const w = s.worker as { pid?: number; activations?: number; hangsHealed?: number; standby?: string; lastFailoverStallMs?: number | null; error?: string; objects?: unknown[]; stats?: Record<string, number> } | undefined;
    process.stdout.write(`lazysnapd ${s.version} pid ${s.pid}, root ${s.root}, config ${s.config}; lazy images: ${s.backend ? `served through ${s.backend}` : s.fscache}\n`);
    const health = w && `worker pid ${w.pid} (activations ${w.activations}, hangs healed ${w.hangsHealed ?? 0}, standby ${w.standby ?? 'none'}${w.lastFailoverStallMs != null ? `, last failover ${w.lastFailoverStallMs} ms` : ''})`;
    if (o.brief) return void (health && process.stdout.write(`${health}\n`));
    if (w) process.stdout.write(`${health}; objects ${w.objects?.length ?? 0}; ${JSON.stringify(w.stats ?? {})}\n`);
    if (w?.error) process.stdout.write(`worker: ${w.error}\n`);
    const c = s.cache as { dir: string; usage: number; maxBytes: number; evictions: number } | undefined;
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    if (c) process.stdout.write(`cache ${c.dir}: ${mib(c.usage)}${c.maxBytes ? ` of ${mib(c.maxBytes)} (${c.evictions} images culled)` : ', no bound'}\n`);
    const inv = s.inventory as Inventory | undefined;
    if (inv) {
      const n = inv.snapshots;
      process.stdout.write(`snapshots: ${n.committed} committed (${n.nydusBlobLayers} nydus blob layers, kept in the registry), ${n.active} active, ${n.view} views; ${n.withoutImageLabel} layers carry no image label (ctr pulls)\n`);
      for (const i of inv.images) process.stdout.write(`  image ${i.ref}: ${i.served}, ${i.layers} layers: ${i.why}\n`);
    }
    type Img = { fsid: string; mountpoint: string; imageRef: string; source: string; backend: string; blobs: BlobStatus[] };
    for (const m of s.images as Img[]) {
      process.stdout.write(`  ${m.mountpoint ?? '(not mounted)'}  fsid=${m.fsid} lazy through ${m.backend}, blobs from ${m.source}${m.imageRef ? ` ${m.imageRef}` : ''}\n`);
      for (const b of m.blobs) {
        if (!b.open) {
          process.stdout.write(`    blob ${b.blob.slice(0, 16)}…  not open in this worker yet (opened again at its next READ)\n`);
          continue;
        }
        const pct = b.bytesPresent === null ? 'local' : `${((100 * b.bytesPresent) / Math.max(1, b.bytes ?? 0)).toFixed(1)}% present`;
        process.stdout.write(`    blob ${b.blob.slice(0, 16)}…  ${b.bytes} bytes, ${pct}\n`);
        for (const c of b.badChunks ?? []) {
          const when = c.until > Date.now() ? `EIO until ${new Date(c.until).toISOString()}` : 'cool-down over: tried again at its next READ';
          process.stdout.write(`      bad chunk ${c.index} [${c.uOffset}, +${c.uSize}) failed verification (${c.failures}×): ${when}\n`);
        }
      }
    }
  });

program
  .command('trace [image]')
  .description('learned prefetch: what the recorded start of an image read (or of every image), first access first: files, bytes, chunks')
  .option('--json', 'print JSON: every chunk, with its blob, offset, size and file')
  .option('--paths', 'print only the files, one per line, first access first (the input of `lazysnap convert --prefetch-trace`)')
  .option('--forget', "delete the image's recorded start: its next start is recorded again")
  .option('--load <file>', 'store the traces in this file (what trace --json printed, e.g. on another node) instead of listing')
  .option('--address <socket>', ADDRESS_HELP)
  .option('--config <file>', CONFIG_HELP)
  .action(async (image: string | undefined, o: { json?: boolean; paths?: boolean; forget?: boolean; load?: string; address?: string; config?: string }) => {
    if (o.load) {
      const json = fs.readFileSync(o.load, 'utf8');
      const stored = await withClient(o, (c) => c.loadTraces(json));
      return void process.stdout.write(`stored ${stored.length} recorded start${stored.length === 1 ? '' : 's'}${stored.map((t) => ` ${t.imageRef || t.key.slice(0, 16)}`).join(',')}\n`);
    }
    const traces = await withClient(o, (c) => c.traces(image ?? '', o.forget));
    if (image && traces.length === 0) throw new (await import('./admin-client')).AdminError(`no recorded start of ${image} (a start is recorded, with [learn] record = true, when a container starts on a lazy image that has none)`);
    if (o.forget) return void process.stdout.write(`forgot ${traces.length} recorded start${traces.length === 1 ? '' : 's'}\n`);
    if (o.json) return void process.stdout.write(JSON.stringify(traces, null, 2) + '\n');
    for (const t of traces) {
      const files = filesInOrder(t.entries);
      if (o.paths) {
        for (const f of files) process.stdout.write(`${f.path}\n`);
        continue;
      }
      const bytes = t.entries.reduce((n, e) => n + e.uSize, 0);
      process.stdout.write(`${t.imageRef || '(local image)'}  key ${t.key.slice(0, 16)}…  recorded ${new Date(t.recordedUs / 1000).toISOString()}, ` +
        `window ${t.windowMs / 1000} s: ${files.length} files, ${t.entries.length} chunks, ${(bytes / 2 ** 20).toFixed(1)} MiB (${t.reads} READs)\n`);
      for (const f of files) process.stdout.write(`  ${String(f.bytes).padStart(10)}  ${f.chunks} chunk${f.chunks === 1 ? ' ' : 's'}  ${f.path}\n`);
    }
  });

/** A trace's files in first-access order, with the bytes and chunks of each that the start read. */
function filesInOrder(entries: { path: string; uSize: number }[]): { path: string; bytes: number; chunks: number }[] {
  const by = new Map<string, { path: string; bytes: number; chunks: number }>();
  for (const e of entries) {
    const f = by.get(e.path) ?? { path: e.path, bytes: 0, chunks: 0 };
    f.bytes += e.uSize;
    f.chunks++;
    by.set(e.path, f);
  }
  return [...by.values()];
}

program
  .command('doctor')
  .description("check this node for lazysnap: kernel features (probed: cachefiles on-demand, EROFS file-backed, fanotify pre-content), modules, the cache dir's filesystem, containerd's config, registry settings, lazysnapd's root and socket; one line each, with the fix; exit 1 if any fails")
  .option('--config <file>', `lazysnapd's config (default ${SYSTEM_CONFIG} if it exists, else the embedded defaults)`)
  .option('--containerd-config <file>', "containerd's config", '/etc/containerd/config.toml')
  .option('--no-probes', 'do not probe the kernel (no cachefiles bind, no mount, no fanotify mark): what lazysnapd checks at start')
  .option('--json', 'print JSON')
  .action(async (o: { config?: string; containerdConfig: string; probes: boolean; json?: boolean }) => {
    const cfg = loadConfig(configFile(o.config, fs.existsSync));
    const { runDoctor } = await import('../doctor/doctor');
    const { formatFindings } = await import('../doctor/finding');
    const findings = await runDoctor(cfg, { containerdConfig: o.containerdConfig, probes: o.probes });
    if (o.json) process.stdout.write(JSON.stringify(findings, null, 2) + '\n');
    else process.stdout.write(`lazysnap ${VERSION} on Linux ${os.release()}\n${formatFindings(findings)}`);
    process.exitCode = findings.some((f) => f.verdict === 'fail') ? 1 : 0;
  });

/** The options convert and optimize share: how the image is converted and pushed. */
function convertOptions(c: Command): Command {
  return c
    .option('--chunk-size <size>', 'chunk size, a power of two from 4KiB to 16MiB', '1MiB')
    .option('--level <n>', 'zstd level for chunks', '3')
    .option('--jobs <n>', 'batches of chunks (up to a chunk size of bytes each) zstd-compressing at once on the threadpool', String(DEFAULT_JOBS))
    .option('--user <user:pass>', "registry credentials for SRC's and DST's registries (Basic, or for a Bearer token); default: docker's config.json")
    .option('--plain-http', 'use http:// for registries without a hosts.toml (automatic for localhost and 127.0.0.1)')
    .option('--hosts-dir <dir>', "containerd's hosts.toml directory (mirrors, CAs, capabilities; push goes only to hosts with \"push\")", DEFAULT_HOSTS_DIR)
    .option('--mount-from <repo>', "a repository of DST's registry to mount blobs from instead of uploading them (repeatable)",
      (v: string, prev: string[] = []) => [...prev, v])
    .option('--upload-chunk-size <size>', 'upload blobs larger than this in PATCH chunks of this size (default: one PUT up to 64MiB, 16MiB chunks above)')
    .option('--platform <os/arch>', 'platform to pick from an image index', 'linux/amd64')
    .option('--tmp-dir <dir>', 'staging directory for registry destinations (and optimize\'s scratch space)')
    .option('--json', 'print the result as JSON');
}

convertOptions(program
  .command('convert <src> <dst>')
  .description('convert an OCI image (oci:DIR[:TAG], a layout path, or docker://HOST/REPO:TAG) into a nydus RAFS v6 image at DST'))
  .option('--prefetch-trace <file>', 'files to fetch first, one path per line (lazysnap trace IMAGE --paths): the bootstrap\'s prefetch table, honoured at every node\'s first start')
  .action(async (src: string, dst: string, opts: ConvertCliOptions) => {
    const { convertCommand } = await import('./convert');
    process.exitCode = await convertCommand(src, dst, opts);
  });

convertOptions(program
  .command('optimize <src> <dst> [cmd...]')
  .description('run the image once (as root: its entrypoint and cmd, or CMD after --), record the files its start opens, and convert it to DST ' +
    'with them as the prefetch table, so that its first start on any node fetches them first (like ctr-remote image optimize). ' +
    'Not a sandbox: the workload runs as root, ignoring the image\'s User, with the host\'s /dev and network'))
  .option('--timeout <seconds>', 'stop the workload after this long (a server never exits)', '10')
  .option('--trace-out <file>', 'also keep the recorded files, one path per line (the input of convert --prefetch-trace)')
  .action(async (src: string, dst: string, cmd: string[], opts: OptimizeCliOptions) => {
    const { optimizeCommand } = await import('./optimize');
    process.exitCode = await optimizeCommand(src, dst, cmd, opts);
  });

program
  .command('pull <ref>')
  .description('pull an image into containerd for lazysnap, lazily: nydus data blobs are not downloaded (for containerd 1.6/1.7, whose ctr pull cannot; on 2.x ctr pull does it with the config in the README)')
  .option('--address <socket>', "containerd's socket", process.env.CONTAINERD_ADDRESS ?? '/run/containerd/containerd.sock')
  .option('-n, --namespace <ns>', 'containerd namespace (ctr: default, Kubernetes: k8s.io)', process.env.CONTAINERD_NAMESPACE ?? 'default')
  .option('--snapshotter <name>', 'the proxy snapshotter lazysnap is registered as', 'lazysnap')
  .option('--hosts-dir <dir>', "containerd's hosts.toml directory (mirrors, CAs)", DEFAULT_HOSTS_DIR)
  .option('--plain-http', 'use http:// for registries without a hosts.toml (automatic for localhost and 127.0.0.1)')
  .option('--user <user:pass>', "registry credentials; default: docker's config.json")
  .option('--platform <os/arch>', 'platform to pick from an image index', 'linux/amd64')
  .option('--json', 'print the result as JSON')
  .action(async (ref: string, opts: PullCliOptions) => {
    const { pullCommand } = await import('./pull');
    process.exitCode = await pullCommand(ref, opts);
  });

async function fail(err: unknown): Promise<never> {
  const e = err as Error & { code?: string | number };
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') process.exit(0);
  if (typeof e.code === 'string' && e.code.startsWith('commander.')) process.exit(1); // commander has printed it
  // a gRPC status from containerd or lazysnapd: its message says it
  const grpcStatus = typeof (e as { code?: unknown }).code === 'number' && 'details' in e;
  // the input's or the system's fault gets one line; a bug, its stack. The error classes come from the modules that
  // threw them, loaded already (import() returns those), or loaded now, on the way out.
  const known =
    grpcStatus ||
    (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) ||
    e instanceof (await import('../config/config')).ConfigError ||
    e instanceof (await import('../image/errors')).FormatError ||
    e instanceof (await import('../registry/errors')).RegistryError ||
    e instanceof (await import('./admin-client')).AdminError ||
    e instanceof (await import('./image-arg')).ImageArgError ||
    e instanceof (await import('../pull/pull')).PullError;
  process.stderr.write(`lazysnap: ${known ? e.message : (e.stack ?? e.message)}\n`);
  process.exit(1);
}

program.parseAsync(process.argv).catch(fail);
