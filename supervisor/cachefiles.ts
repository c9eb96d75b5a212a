// lazysnapd's own commands to /dev/cachefiles: open and bind it in on-demand
// mode once at start, and cull a removed image's cache files. Serving the
// kernel's requests is the worker's (worker/device.ts).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { cmd } from '../worker/protocol';

export const DEVICE_PATH = '/dev/cachefiles';
export function openDevice(path = DEVICE_PATH): number {
  return fs.openSync(path, fs.constants.O_RDWR);
}

/** One command per write(); the kernel answers errors through write's return. */
function writeCommand(fd: number, line: string): void {
  fs.writeSync(fd, line);
}

/**
 * Culls cache file `name` of directory `dir` (moved to the graveyard):
 * cachefiles resolves the name in the writer's working directory. Throws
 * EBUSY while the kernel uses the file. Changes the process's cwd for the
 * duration of one synchronous write; all of lazysnap's paths are absolute.
 */
export function cullFile(fd: number, dir: string, name: string): void {
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    writeCommand(fd, cmd.cull(name));
  } finally {
    process.chdir(cwd);
  }
}

/** Binds a freshly opened device to a cache dir in on-demand mode. */
export function bindDevice(fd: number, cacheDir: string, tag: string): void {
  writeCommand(fd, cmd.dir(cacheDir));
  writeCommand(fd, cmd.tag(tag));
  writeCommand(fd, cmd.bindOndemand());
}

/**
 * `modprobe cachefiles`, as an operator would type it before starting a
 * cachefiles daemon: null when it loaded (or was there), else why not, for
 * the line that says fscache is off. Never throws.
 */
export function loadCachefilesModule(): string | null {
  const r = spawnSync('modprobe', ['cachefiles'], { timeout: 10_000, encoding: 'utf8', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } });
  if (r.error) return (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'modprobe is not installed (kmod)' : `modprobe cachefiles: ${r.error.message}`;
  if (r.status !== 0) return `modprobe cachefiles failed: ${(r.stderr || `exit ${r.status}`).trim().split('\n')[0].slice(0, 200)}`;
  return null;
}
