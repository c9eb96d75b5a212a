// The reader of the hang test: reads every file under a mount in 1 MiB
// reads, compares each byte with the source, and times each read() call.
// Prints "reading" once its first read has returned (the test then hangs the
// worker mid-pass), then one JSON result. A failing read is counted, never retried.
import fs from 'node:fs';
import path from 'node:path';

const [mnt, src] = process.argv.slice(2);
const BLOCK = 1 << 20;
const r = { files: 0, bytes: 0, readsFailed: 0, mismatchedBytes: 0, worstStallMs: 0, errors: [] as string[] };
const a = Buffer.alloc(BLOCK);
const b = Buffer.alloc(BLOCK);
let announced = false;

function walk(rel: string): void {
  for (const name of fs.readdirSync(path.join(mnt, rel)).sort()) {
    const p = path.join(rel, name);
    const st = fs.lstatSync(path.join(mnt, p));
    if (st.isDirectory()) walk(p);
    else if (st.isFile()) readFile(p, st.size);
  }
}

function readFile(rel: string, size: number): void {
  r.files++;
  const fsrc = fs.openSync(path.join(src, rel), 'r');
  let fm: number | undefined;
  try {
    fm = fs.openSync(path.join(mnt, rel), 'r');
    for (let off = 0; off < size; ) {
      const t = performance.now();
      const n = fs.readSync(fm, a, 0, BLOCK, off);
      r.worstStallMs = Math.max(r.worstStallMs, performance.now() - t);
      if (n === 0) throw new Error(`short file at ${off} of ${size}`);
      if (!announced) {
        announced = true;
        fs.writeSync(1, 'reading\n');
      }
      fs.readSync(fsrc, b, 0, n, off);
      for (let i = 0; i < n; i++) if (a[i] !== b[i]) r.mismatchedBytes++;
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
fs.writeSync(1, JSON.stringify(r) + '\n');
