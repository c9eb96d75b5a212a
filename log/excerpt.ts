// How a string someone else chose (a key, a label, a filter, a path) appears
// in an error or a log line: bounded and on one line. An 80 KB key repeated
// into a gRPC status message made trailers larger than clients accept, and
// the call, and the channel after it, never got an answer.

export const EXCERPT_CHARS = 128;

/** s itself when short; else its first `max` characters, "…" and its length in bytes. Control characters are escaped. */
export function excerpt(s: string, max = EXCERPT_CHARS): string {
  const cut = s.length > max;
  let head = cut ? s.slice(0, max) : s;
  // do not leave half of a surrogate pair at the cut
  if (cut && /[\ud800-\udbff]$/.test(head)) head = head.slice(0, -1);
  head = head.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return cut ? `${head}… (${Buffer.byteLength(s)} bytes)` : head;
}
