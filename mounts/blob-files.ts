// The blob files of fanotify mounts: one sparse file per data blob, at
// <blob dir>/<volume>/<device tag>, as long as the device table says, marked
// for pre-content events before anything mounts it. Unmarked, an unfilled
// range of it reads as zeros; so a file is never handed to a mount unmarked
// unless it is complete.
import fs from 'node:fs';
import path from 'node:path';
import { MS, fanotifyMark, seekHole } from '../native';
import { FAN } from '../worker/fanotify/events';

export class BlobFileError extends Error {}

/** <blobDir>/<volume>/<tag>, its directory made; a tag that cannot be a file name is refused. */
function blobFile(blobDir: string, volume: string, tag: string): string {
  if (!/^[A-Za-z0-9._-]{1,64}$/.test(tag) || tag.startsWith('.')) throw new BlobFileError(`device tag "${tag.slice(0, 80)}" cannot name a blob file`);
  const dir = path.join(blobDir, volume);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return path.join(dir, tag);
}

/** Creates (or finds) the image's blob files and marks the incomplete ones; returns them in device order. */
export function prepareBlobFiles(groupFd: number, blobDir: string, volume: string, devices: { tag: string; size: number }[]):
  { file: string; size: number; marked: boolean; created: boolean }[] {
  return devices.map(({ tag, size }) => {
    const file = blobFile(blobDir, volume, tag);
    const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    let created = false;
    try {
      const have = fs.fstatSync(fd).size;
      if (have === 0) {
        fs.ftruncateSync(fd, size);
        created = true;
      } else if (have !== size) throw new BlobFileError(`blob file ${file} is ${have} bytes; the device table says ${size}`);
      if (size > 0 && seekHole(fd, 0) >= size) return { file, size, marked: false, created }; // complete: nothing to hold back
    } finally {
      fs.closeSync(fd);
    }
    fanotifyMark(groupFd, FAN.MARK_ADD, FAN.PRE_ACCESS, file);
    return { file, size, marked: true, created };
  });
}

/** mount(2)'s flags and data for a file-backed EROFS with its blobs as devices, and the same as mount(8)'s -o, for messages. */
export function fileBackedMount(o: { devices: string[]; nosuid?: boolean }): { flags: number; data: string; shown: string } {
  for (const d of o.devices) if (d.includes(',')) throw new BlobFileError(`blob file path ${d} contains a comma`);
  const data = o.devices.map((d) => `device=${d}`).join(',');
  return {
    flags: MS.RDONLY | (o.nosuid ? MS.NOSUID | MS.NODEV : 0),
    data,
    shown: ['ro', ...(o.nosuid ? ['nosuid', 'nodev'] : []), ...(data ? [data] : [])].join(','),
  };
}

/**
 * Whether this kernel and blobDir can serve lazily through fanotify: a probe
 * file in blobDir is marked for pre-content events. Returns why not, or null.
 */
export function fanotifyUnsupported(groupFd: number, blobDir: string): string | null {
  fs.mkdirSync(blobDir, { recursive: true, mode: 0o700 });
  const probe = path.join(blobDir, '.mark-probe');
  fs.writeFileSync(probe, '');
  try {
    fanotifyMark(groupFd, FAN.MARK_ADD, FAN.PRE_ACCESS, probe);
    fanotifyMark(groupFd, FAN.MARK_REMOVE, FAN.PRE_ACCESS, probe);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EINVAL') return 'the kernel has no fanotify pre-content events (Linux >= 6.14 with CONFIG_FANOTIFY_ACCESS_PERMISSIONS)';
    if (code === 'EOPNOTSUPP') return `${blobDir} is on a filesystem that refuses pre-content marks (tmpfs does; use ext4 or xfs)`;
    return `cannot mark a file in ${blobDir}: ${(err as Error).message}`;
  } finally {
    fs.rmSync(probe, { force: true });
  }
}

/** Fills a whole blob file through content/: (volume, cookie) name the blob as the worker's resolver knows it. */
export type BlobDownloader = (volume: string, tag: string, fd: number, size: number) => Promise<void>;

const downloading = new Map<string, Promise<void>>();

/**
 * Without a lazy backend: every blob file complete before the mount. Each is
 * written as <tag>.part and renamed when whole, so a file named <tag> is
 * always complete (a crash leaves only a .part, which is started over).
 */
export async function downloadBlobFiles(blobDir: string, volume: string, devices: { tag: string; size: number }[], download: BlobDownloader): Promise<string[]> {
  const files: string[] = [];
  for (const { tag, size } of devices) {
    const file = blobFile(blobDir, volume, tag);
    files.push(file);
    const have = fs.statSync(file, { throwIfNoEntry: false });
    if (have?.size === size) continue;
    let p = downloading.get(file);
    if (!p) {
      p = (async () => {
        const part = `${file}.part`;
        const fd = fs.openSync(part, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_TRUNC, 0o600);
        try {
          fs.ftruncateSync(fd, size);
          await download(volume, tag, fd, size);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        fs.renameSync(part, file);
      })().finally(() => downloading.delete(file));
      downloading.set(file, p);
    }
    await p;
  }
  return files;
}
