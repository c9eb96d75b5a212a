// Disk usage of a directory tree as containerd's continuity fs.DiskUsage
// counts it: every distinct inode once, its allocated blocks in 512-byte units.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Usage } from './storage/info';

export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (p: string) => {
    const st = await fs.lstat(p, { bigint: true });
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      for (const name of await fs.readdir(p)) await visit(path.join(p, name));
    }
  };
  await visit(root);
  return { size, inodes: seen.size };
}
