// Sizes as operators write them: "1048576", "512K", "1MiB", "20G", "2TiB".
// K, M, G and T are binary (KiB, MiB, ...), as in containerd's and
// Kubernetes' usual sizes for disks; a trailing B is optional.

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

export function parseSize(s: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(s.trim());
  if (!m || (m[3] && !m[2] && m[3].toLowerCase() !== 'b')) throw new Error(`bad size "${s.slice(0, 40)}" (e.g. 512K, 1MiB, 20GiB)`);
  const n = parseInt(m[1], 10) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(n)) throw new Error(`size "${s.slice(0, 40)}" is too large`);
  return n;
}
