// Disk usage of a directory tree as containerd's continuity fs.DiskUsage
// counts it: every distinct inode once, its allocated blocks in 512-byte units.
// Entries that vanish during the walk (the kernel culls the fscache cache while
// it is measured; a container writes its upper dir) count as gone, not as errors.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Usage } from './storage/info';

export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (p: string, top: boolean) => {
    let st;
    try {
      st = await fs.lstat(p, { bigint: true });
    } catch (e) {
      if (!top && gone(e)) return;
      throw e;
    }
    const key = `${st.dev}:${st.ino}`;
    if (!seen.has(key)) {
      seen.add(key);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      let names: string[];
      try {
        names = await fs.readdir(p);
      } catch (e) {
        if (!top && gone(e)) return;
        throw e;
      }
      for (const name of names) await visit(path.join(p, name), false);
    }
  };
  await visit(root, true);
  return { size, inodes: seen.size };
}

function gone(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
