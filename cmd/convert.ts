// `lazysnap convert SRC DST`: OCI image → nydus RAFS v6 image. A progress bar
// on a TTY, otherwise one line per layer (logs stay readable).
import { readFileSync } from 'node:fs';
import { parseSize } from '../config/size';
import { MultiBar, Presets, SingleBar } from 'cli-progress';
import { convert, ConvertOptions, DEFAULT_CHUNK_SIZE } from '../image/convert';
import { RegistryError } from '../registry/errors';

export interface ConvertCliOptions {
  chunkSize?: string;
  level?: string;
  jobs?: string;
  user?: string;
  plainHttp?: boolean;
  hostsDir?: string;
  mountFrom?: string[];
  uploadChunkSize?: string;
  platform?: string;
  tmpDir?: string;
  json?: boolean;
  prefetchTrace?: string;
}

const KNOWN = new Set(['LayerError', 'ImageError', 'TreeError', 'TreeBuildError', 'XattrError', 'FormatError', 'TarFormatError', 'RangeError']);
const short = (d: string) => d.replace(/^sha256:/, '').slice(0, 12);
const mb = (n: number) => (n / 1e6).toFixed(1);

/** The converter's options from the command line's (convert and optimize share them). */
export function convertOptionsOf(o: ConvertCliOptions): ConvertOptions {
  return {
    chunkSize: o.chunkSize ? parseSize(o.chunkSize) : DEFAULT_CHUNK_SIZE,
    level: o.level ? parseInt(o.level, 10) : 3,
    jobs: o.jobs !== undefined ? parseInt(o.jobs, 10) : undefined,
    user: o.user,
    plainHttp: o.plainHttp,
    hostsDir: o.hostsDir,
    mountFrom: o.mountFrom,
    uploadChunkSize: o.uploadChunkSize ? parseSize(o.uploadChunkSize) : undefined,
    platform: o.platform,
    tmpDir: o.tmpDir,
  };
}

/** Whether an error is the input's fault (one line to the user) rather than a bug (its stack). */
export function isInputError(e: unknown): boolean {
  const err = e as Error;
  return KNOWN.has(err.name) || e instanceof RegistryError || !!(err as { code?: string }).code?.startsWith('E');
}

export async function convertCommand(src: string, dst: string, o: ConvertCliOptions): Promise<number> {
  const tty = process.stderr.isTTY === true;
  let multi: MultiBar | undefined;
  let bar: SingleBar | undefined;
  const pushBars = new Map<number, SingleBar>();
  const bars = () =>
    (multi ??= new MultiBar({ format: ' {name} [{bar}] {percentage}% | {value}/{total} MB', clearOnComplete: false, hideCursor: true }, Presets.shades_classic));
  const say = (line: string) => {
    if (multi) {
      multi.log(line + '\n');
      multi.update(); // render now: the log is only flushed on a redraw
    } else process.stderr.write(line + '\n');
  };
  const opts: ConvertOptions = {
    ...convertOptionsOf(o),
    prefetchPaths: o.prefetchTrace ? readPrefetchTrace(o.prefetchTrace) : undefined,
    warn: (m) => (multi ? multi.log(`warning: ${m}\n`) : process.stderr.write(`warning: ${m}\n`)),
    onLayerStart: (i, n, d) => {
      if (!tty) return;
      bar = bars().create(Math.max(1, Math.round(d.size / 1e6)), 0, { name: `layer ${i + 1}/${n} ${short(d.digest)}` });
    },
    onLayerBytes: (_i, bytes) => bar?.update(Math.round(bytes / 1e6)),
    onLayerDone: (i, n, d, r) => {
      bar?.update(bar.getTotal());
      const s = r.stats;
      const b = r.blob;
      const line =
        `layer ${i + 1}/${n} ${d.digest}: ${mb(s.compressedBytes)} MB in, ${s.entries} entries, ${s.files} files, ${mb(s.fileBytes)} MB data → ` +
        (b
          ? `blob ${short(b.id)} ${mb(b.entry.compressedSize)} MB (${b.stats.chunks} chunks, ${b.stats.dedupHits} dedup, ${b.stats.holes} holes, ${b.stats.rawChunks} stored raw)`
          : 'no blob (no file data)') +
        ` in ${r.seconds.toFixed(2)} s`;
      say(line);
    },
    onPushStart: (i, n, d) => {
      if (tty) pushBars.set(i, bars().create(Math.max(1, Math.round(d.size / 1e6)), 0, { name: `push  ${i + 1}/${n} ${short(d.digest)}` }));
    },
    onPushBytes: (i, bytes) => pushBars.get(i)?.update(Math.round(bytes / 1e6)),
    onPushDone: (i, n, d, outcome, secs) => {
      const b = pushBars.get(i);
      b?.update(b.getTotal());
      const how = outcome === 'exists' ? 'already there' : outcome === 'mounted' ? 'mounted from another repository' : `uploaded in ${secs.toFixed(2)} s`;
      say(`push ${i + 1}/${n} ${d.digest}: ${mb(d.size)} MB ${how}`);
    },
  };
  let r;
  try {
    r = await convert(src, dst, opts);
  } catch (e) {
    // input problems get a one-line message; anything else keeps its stack
    if (!isInputError(e)) throw e;
    multi?.stop();
    process.stderr.write(`lazysnap convert: ${(e as Error).message}\n`);
    return 1;
  } finally {
    multi?.stop();
  }
  if (o.json) {
    process.stdout.write(JSON.stringify({ manifest: r.manifest, blobs: r.blobs, bootstrap: r.bootstrap, bootstrapSize: r.bootstrapSize, inputBytes: r.inputBytes, uncompressedBytes: r.uncompressedBytes, seconds: r.seconds }, null, 2) + '\n');
  } else {
    process.stdout.write(
      `converted ${r.source} → ${r.dest}\n` +
        `  manifest ${r.manifest.digest}\n` +
        r.blobs.map((b) => `  blob ${b.digest} ${b.size} bytes\n`).join('') +
        `  bootstrap ${r.bootstrap.digest} (image.boot ${r.bootstrapSize} bytes)\n` +
        `  ${mb(r.inputBytes)} MB in (${mb(r.uncompressedBytes)} MB uncompressed) in ${r.seconds.toFixed(2)} s: ${mb(r.uncompressedBytes / r.seconds)} MB/s\n`,
    );
  }
  return 0;
}

/** A prefetch trace file: absolute paths, one per line (`lazysnap trace IMAGE --paths`); blank lines and # comments ignored. */
export function readPrefetchTrace(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const paths = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const bad = paths.find((p) => !p.startsWith('/'));
  if (bad !== undefined) throw new RangeError(`${file}: "${bad.slice(0, 80)}" is not an absolute path (one path per line, as lazysnap trace --paths prints)`);
  return paths;
}
