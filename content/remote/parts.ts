// A range of a blob kept as the buffers it arrived in (a response body's
// socket reads), so a Range GET is never joined into one buffer: each chunk
// is a list of views of those buffers, and the decoder reads across them.

/**
 * Bytes [off, off+len) of the concatenation of `parts`, as views of them
 * (nothing copied); only those there are if the parts end first, as
 * Buffer.subarray does: a short chunk then fails its length check, which
 * counts as a bad chunk and is fetched again.
 */
export function sliceParts(parts: readonly Buffer[], off: number, len: number): Buffer[] {
  if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0) {
    throw new RangeError(`bad slice [${off}, +${len})`);
  }
  const out: Buffer[] = [];
  const end = off + len;
  let pos = 0; // where the current part starts
  for (const p of parts) {
    if (pos >= end) break;
    const from = Math.max(off, pos);
    const to = Math.min(end, pos + p.length);
    if (to > from) out.push(from === pos && to === pos + p.length ? p : p.subarray(from - pos, to - pos));
    pos += p.length;
  }
  return out;
}
