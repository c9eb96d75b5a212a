// What the kernel can do, asked by doing it once in a scratch directory: bind
// /dev/cachefiles in on-demand mode, mount an EROFS image file-backed, mark a
// file for fanotify pre-content events. Each returns null when it works, or
// why not; none leaves anything behind.
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { MS, fanotifyInit, mountFs } from '../native';
import { fanotifyUnsupported } from '../mounts/blob-files';
import { EVENT_FD_FLAGS, FAN } from '../worker/fanotify/events';
import { bindDevice, openDevice } from '../supervisor/cachefiles';
import { writeErofs } from '../image/erofs/writer';

/** Filesystems the kernel has now (/proc/filesystems). */
export function kernelFilesystems(): Set<string> {
  return new Set(fs.readFileSync('/proc/filesystems', 'utf8').split('\n').map((l) => l.split('\t').pop()!.trim()).filter(Boolean));
}

/** Binds the device to a scratch cache in `scratch` in on-demand mode, then closes it (which unbinds). */
export function probeCachefilesOndemand(device: string, scratch: string): string | null {
  let fd: number;
  try {
    fd = openDevice(device);
  } catch (err) {
    return `cannot open ${device}: ${(err as Error).message}`;
  }
  try {
    fs.mkdirSync(scratch, { recursive: true, mode: 0o700 });
    bindDevice(fd, scratch, 'lazysnap-doctor');
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EOPNOTSUPP' || code === 'ENOTSUP') return 'bind ondemand refused: no CONFIG_CACHEFILES_ONDEMAND, or a cache filesystem without xattrs';
    return `bind ondemand in ${scratch}: ${(err as Error).message}`;
  } finally {
    fs.closeSync(fd);
  }
}

/** The smallest EROFS image: an empty root directory. */
function emptyErofs(): Buffer {
  return writeErofs(
    { kind: 'dir', mode: 0o755, uid: 0, gid: 0, mtime: 0, mtimeNsec: 0, xattrs: new Map(), children: new Map() },
    { chunkBits: 12, chunkIndexes: () => Buffer.alloc(0), devices: [], devtSlotoff: 11, reserved: 0, featureCompat: 0, buildTime: 0, buildTimeNsec: 0, uuid: Buffer.alloc(16) },
  ).image;
}

/** Mounts an EROFS image straight from a regular file (Linux >= 6.12, CONFIG_EROFS_FS_BACKED_BY_FILE). */
export async function probeErofsFileBacked(scratch: string): Promise<string | null> {
  const img = path.join(scratch, 'probe.erofs');
  const mnt = path.join(scratch, 'probe-mnt');
  fs.writeFileSync(img, emptyErofs());
  fs.mkdirSync(mnt);
  try {
    await mountFs(img, mnt, 'erofs', MS.RDONLY | MS.NOSUID | MS.NODEV, '');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTBLK') return 'EROFS mounts only block devices here: no CONFIG_EROFS_FS_BACKED_BY_FILE (Linux >= 6.12)';
    if (code === 'ENODEV') return 'no EROFS in this kernel (CONFIG_EROFS_FS)';
    return `mount: ${(err as Error).message}`;
  }
  execFileSync('umount', [mnt], { timeout: 10_000 });
  return null;
}

/** Makes a pre-content group and marks a file of `dir` with it (the filesystem must accept the mark too). */
export function probeFanotifyPrecontent(dir: string): string | null {
  let group: number;
  try {
    group = fanotifyInit(FAN.CLASS_PRE_CONTENT | FAN.CLOEXEC | FAN.NONBLOCK, EVENT_FD_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EINVAL') return 'no fanotify pre-content class (Linux >= 6.14, CONFIG_FANOTIFY_ACCESS_PERMISSIONS)';
    return `fanotify_init: ${(err as Error).message}`;
  }
  try {
    return fanotifyUnsupported(group, dir);
  } finally {
    fs.closeSync(group);
  }
}

/** statfs f_type names for the filesystems a cache dir is likely on. */
const FS_TYPES: Record<number, string> = {
  0xef53: 'ext4', 0x58465342: 'xfs', 0x9123683e: 'btrfs', 0x01021994: 'tmpfs', 0x794c7630: 'overlayfs', 0x6969: 'nfs', 0x00c36400: 'ceph', 0x65735546: 'fuse', 0x2fc12fc1: 'zfs',
};

export function filesystemOf(dir: string): string {
  const t = fs.statfsSync(dir).type;
  return FS_TYPES[t] ?? `type 0x${t.toString(16)}`;
}
