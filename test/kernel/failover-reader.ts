// The reader of the failover test: reads every file under a mount in 1 MiB
// reads, compares each byte with the source, times each read() call, and
// prints one JSON result. A failing read is counted, never retried. Once the
// file STOP exists (the test has its kills), it ends after the file it is on.
import fs from 'node:fs';
import path from 'node:path';

const [mnt, src, stop] = process.argv.slice(2);
const BLOCK = 1 << 20;
const r = { files: 0, bytes: 0, readsFailed: 0, mismatchedBytes: 0, worstStallMs: 0, stopped: false, errors: [] as string[] };
const a = Buffer.alloc(BLOCK);
const b = Buffer.alloc(BLOCK);

// A failing readdir or lstat is a failed read too (metadata comes from the
// bootstrap through the same kernel path), and the walk goes on.
function walk(rel: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(mnt, rel)).sort();
  } catch (e) {
    r.readsFailed++;
    r.errors.push(`readdir ${rel || '.'}: ${(e as Error).message}`);
    return;
  }
  for (const name of names) {
    if (r.stopped || (stop && fs.existsSync(stop))) {
      r.stopped = true;
      return;
    }
    const p = path.join(rel, name);
    let st: fs.Stats;
    try {
      st = fs.lstatSync(path.join(mnt, p));
    } catch (e) {
      r.readsFailed++;
      r.errors.push(`lstat ${p}: ${(e as Error).message}`);
      continue;
    }
    if (st.isDirectory()) walk(p);
    else if (st.isFile()) readFile(p, st.size);
  }
}

function readFile(rel: string, size: number): void {
  r.files++;
  let fm: number | undefined;
  const fsrc = fs.openSync(path.join(src, rel), 'r');
  try {
    fm = fs.openSync(path.join(mnt, rel), 'r');
    for (let off = 0; off < size; ) {
      const t = performance.now();
      const n = fs.readSync(fm, a, 0, BLOCK, off);
      r.worstStallMs = Math.max(r.worstStallMs, performance.now() - t);
      if (n === 0) throw new Error(`short file at ${off} of ${size}`);
      fs.readSync(fsrc, b, 0, n, off);
      // memcmp first: a byte loop in JS per MiB took the guest's one CPU from the workers
      if (!a.subarray(0, n).equals(b.subarray(0, n))) for (let i = 0; i < n; i++) if (a[i] !== b[i]) r.mismatchedBytes++;
      off += n;
      r.bytes += n;
    }
  } catch (e) {
    r.readsFailed++;
    r.errors.push(`${rel}: ${(e as Error).message}`);
  } finally {
    if (fm !== undefined) fs.closeSync(fm);
    fs.closeSync(fsrc);
  }
}

walk('');
process.stdout.write(JSON.stringify(r));
