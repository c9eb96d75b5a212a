// Reading a file an operator or a client names, when it must be a plain file
// of bounded size: a FIFO must not hang the reader and /dev/zero must not
// fill its memory (both happened to --config).
import crypto from 'node:crypto';
import fs from 'node:fs';

export class FileRefused extends Error {}

function kind(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'a special file';
}

/** An fd on file, once fstat says it is a regular file of at most maxBytes (closed if not). */
function openRegularFile(file: string, maxBytes: number): { fd: number; st: fs.Stats } {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY);
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new FileRefused(`is ${kind(st)}, not a regular file`);
    if (st.size > maxBytes) throw new FileRefused(`is ${st.size} bytes, more than ${maxBytes}`);
    return { fd, st };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/**
 * The contents of a regular file of at most maxBytes. Opened non-blocking
 * (opening a FIFO then returns at once) and checked with fstat on the open
 * fd; read with the bound even when its size says otherwise (/proc files say 0).
 * Errors from open(2) pass through with their code; the others are FileRefused.
 */
export function readRegularFile(file: string, maxBytes: number): Buffer {
  const { fd, st } = openRegularFile(file, maxBytes);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(maxBytes + 1 - total, Math.max(st.size - total + 1, 1 << 16)));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
      if (total > maxBytes) throw new FileRefused(`is more than ${maxBytes} bytes`);
    }
    // One read is the usual case: no second copy (a 500 MiB bootstrap copied twice ran a UML guest out of host mappings).
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Copies a regular file of at most maxBytes to dst (created, 0600; it must
 * not exist) under readRegularFile's checks, in bounded memory: an EROFS
 * image given as a bootstrap can be hundreds of MiB, and read whole it stayed
 * in lazysnapd's heap (600 MB after one 512 MiB mount, OOM in a 4 GiB guest).
 * Returns the sha256 of the bytes and the first headBytes of them.
 */
export function copyRegularFile(file: string, dst: string, maxBytes: number, headBytes: number): { sha256: string; head: Buffer } {
  const { fd } = openRegularFile(file, maxBytes);
  try {
    const out = fs.openSync(dst, 'wx', 0o600);
    try {
      const hash = crypto.createHash('sha256');
      const buf = Buffer.allocUnsafe(1 << 20);
      const head = Buffer.alloc(headBytes);
      let headLen = 0;
      let total = 0;
      for (;;) {
        const n = fs.readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        total += n;
        if (total > maxBytes) throw new FileRefused(`is more than ${maxBytes} bytes`);
        const chunk = buf.subarray(0, n);
        hash.update(chunk);
        if (headLen < headBytes) headLen += chunk.copy(head, headLen);
        for (let w = 0; w < n; ) w += fs.writeSync(out, chunk, w, n - w);
      }
      return { sha256: hash.digest('hex'), head: head.subarray(0, headLen) };
    } finally {
      fs.closeSync(out);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** One line for a failed readRegularFile, without the path (the caller names it). */
export function readFailure(e: unknown): string {
  if (e instanceof FileRefused) return e.message;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES') return 'permission denied';
  if (code === 'ENXIO') return 'is a socket or a device without a driver, not a regular file';
  // node's "ENAMETOOLONG: name too long, open '<path>'": the caller names the path, bounded
  return (e as Error).message.split('\n')[0].replace(/, \w+ '.*$/, '');
}
