// `lazysnap inspect`: superblock facts, blobs and the file tree of a bootstrap.
import { openImageArg, type ImageArgOptions } from './image-arg';
import { describeBootstrap, InspectReport, TreeEntry, verifyBlobs } from '../image/inspect/inspect';

const TYPE: Record<number, string> = { 0o040000: 'd', 0o100000: '-', 0o120000: 'l', 0o020000: 'c', 0o060000: 'b', 0o010000: 'p', 0o140000: 's' };

function modeString(mode: number): string {
  const rwx = (v: number) => `${v & 4 ? 'r' : '-'}${v & 2 ? 'w' : '-'}${v & 1 ? 'x' : '-'}`;
  return (TYPE[mode & 0o170000] ?? '?') + rwx(mode >> 6) + rwx(mode >> 3) + rwx(mode);
}

function treeLine(t: TreeEntry): string {
  let s = `${modeString(t.mode)} ${String(t.uid).padStart(5)}:${String(t.gid).padEnd(5)} ${String(t.size).padStart(10)} ${t.path}`;
  if (t.link !== undefined) s += ` -> ${t.link}`;
  if (t.hardlinkOf) s += ` (hard link to ${t.hardlinkOf})`;
  if (t.rdev !== undefined) s += ` (rdev ${t.rdev})`;
  if (t.xattrs) s += ` [${Object.keys(t.xattrs).join(' ')}]`;
  return s;
}

function printText(r: InspectReport, out: NodeJS.WritableStream) {
  out.write(`bootstrap ${r.bootstrap}\n`);
  out.write(`  ${Object.entries(r.superblock).map(([k, v]) => `${k}=${v}`).join(' ')}\n`);
  out.write(`  rafs: chunkSize=${r.rafs.chunkSize} prefetchInodes=${r.rafs.prefetchInodes} flags=${r.rafs.flags.join(',')}\n`);
  out.write(`blobs: ${r.blobs.length}\n`);
  for (const b of r.blobs) {
    out.write(
      `  [${b.index}] ${b.blobId} chunks=${b.chunks} chunkSize=${b.chunkSize} compressed=${b.compressedSize} ` +
        `uncompressed=${b.uncompressedSize} ${b.compressor}/${b.digester} deviceBlocks=${b.deviceBlocks} features=${b.features.join(',')}` +
        `${b.tag !== b.blobId ? ` tag=${b.tag || '(empty)'}` : ''}\n`,
    );
  }
  out.write(`tree: ${r.tree.length} entries\n`);
  for (const t of r.tree) out.write(`  ${treeLine(t)}\n`);
}

export async function inspect(image: string, opts: ImageArgOptions & { verify?: boolean; json?: boolean }): Promise<number> {
  const img = await openImageArg(image, opts);
  let report: InspectReport;
  try {
    report = describeBootstrap(image, img.bootstrap);
    if (opts.verify) {
      const tty = process.stderr.isTTY;
      report.verify = await verifyBlobs(img.bootstrap, img.openBlob, tty ? (d, n) => process.stderr.write(`\rverifying chunk ${d}/${n}`) : undefined);
      if (tty) process.stderr.write('\n');
    }
  } finally {
    await img.close();
  }
  if (opts.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else printText(report, process.stdout);
  const v = report.verify;
  if (!v) return 0;
  for (const m of v.missingBlobs) process.stdout.write(`missing blob ${m} (not in ${img.blobsWhere})\n`);
  for (const f of v.failures) process.stdout.write(`FAILED ${f}\n`);
  process.stdout.write(`chunks=${v.chunks} verified=${v.verified} failed=${v.failed}\n`);
  return v.failed === 0 && v.missingBlobs.length === 0 ? 0 : 1;
}
