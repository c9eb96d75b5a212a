// Where `lazysnap mount` may mount: only beneath the directories the config
// lists (admin.mount_dirs), after symlinks are resolved. lazysnapd runs as
// root, so without this the CLI could mount an image over /etc or /usr/bin.
import fs from 'node:fs';
import path from 'node:path';
import { excerpt, invalidArgument } from '../snapshotter/storage/errors';
import { MountError } from '../mounts/mounter';

/** Whether real lies strictly beneath one of dirs (all absolute and resolved). Mounting over a listed dir itself would hide what else is mounted there. */
export function isBeneath(real: string, dirs: string[]): boolean {
  return dirs.some((d) => {
    const base = d.endsWith('/') ? d : `${d}/`;
    return real.startsWith(base) && real.length > base.length;
  });
}

/** The real path of mountpoint if it is allowed; else INVALID_ARGUMENT naming the allowed dirs. */
export function allowedMountpoint(mountpoint: string, mountDirs: string[]): string {
  if (!path.isAbsolute(mountpoint)) throw invalidArgument(`mountpoint ${excerpt(mountpoint)} must be an absolute path`);
  let real: string;
  try {
    real = fs.realpathSync(mountpoint);
  } catch {
    throw new MountError(`mountpoint ${excerpt(mountpoint)} does not exist`);
  }
  // a listed directory that does not exist allows nothing
  const dirs = mountDirs.flatMap((d) => {
    try {
      return [fs.realpathSync(d)];
    } catch {
      return [];
    }
  });
  if (!isBeneath(real, dirs)) {
    const shown = real === mountpoint ? excerpt(real) : `${excerpt(mountpoint)} (${excerpt(real)})`;
    throw invalidArgument(`mountpoint ${shown} is not beneath a directory of admin.mount_dirs (${mountDirs.map((d) => excerpt(d)).join(', ')})`);
  }
  return real;
}
