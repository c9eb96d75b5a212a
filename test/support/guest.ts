// Helpers for tests that run inside the UML test kernel (test/kernel/*).
// Unix sockets do not work on hostfs, so daemons live under the guest's /run.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { runOk } from './proc';

export const HOW_TO_RUN = 'run kernel tests inside the UML test kernel: ../shared/kernel/uml-run.sh -- node --test dist/test/kernel/';

/** Fails (never skips) outside a kernel with fscache on-demand. */
export function requireFscacheKernel(): string {
  assert.ok(fs.existsSync('/dev/cachefiles'), `/dev/cachefiles is missing; ${HOW_TO_RUN}`);
  const dir = process.env.FSCACHE_DIR;
  assert.ok(dir && fs.existsSync(dir), `$FSCACHE_DIR (an ext4 cache dir) is missing; ${HOW_TO_RUN}`);
  emptyScratchCache(dir);
  return dir;
}

/**
 * Each test file starts with an empty $FSCACHE_DIR. It is a small ext4
 * (256 MB, in the guest's memory) shared by the files of one guest run; the
 * caches an earlier file left there once filled it, cachefiles refused the
 * next file's writes below its free-space floor (pwrite: ENOBUFS) and its
 * readers got EIO. The earlier files are done (one file at a time), so a
 * worker still running is a leftover that keeps its cache bound.
 */
function emptyScratchCache(dir: string): void {
  spawnSync('pkill', ['-9', '-f', 'lazysnap-fscache-worker']);
  for (const e of fs.readdirSync(dir)) {
    if (e === 'lost+found') continue;
    fs.rmSync(path.join(dir, e), { recursive: true, force: true, maxRetries: 5 });
  }
  const st = fs.statfsSync(dir);
  assert.ok(st.bavail / st.blocks > 0.9, `$FSCACHE_DIR ${dir} is ${Math.round(100 - (100 * st.bavail) / st.blocks)}% full after emptying it`);
}

const GUEST_DIRS = '/run/lazysnap-kt';

/** A fresh directory under the guest's /run. */
export function guestDir(label: string): string {
  fs.mkdirSync(GUEST_DIRS, { recursive: true });
  return fs.mkdtempSync(`${GUEST_DIRS}/${label}-`);
}

/** Config lines that let `lazysnap mount` mount beneath guestDir()s (admin.mount_dirs); append them last. */
export const GUEST_MOUNT_DIRS = `[admin]\nmount_dirs = ["${GUEST_DIRS}"]\n`;

export function sha256File(p: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

/** path → sha256 (regular files), "->target" (symlinks), "dir" — relative to root. */
export function treeDigest(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      const st = fs.lstatSync(p);
      const rel = path.relative(root, p);
      if (st.isSymbolicLink()) out.set(rel, `->${fs.readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.set(rel, 'dir');
        walk(p);
      } else if (st.isFile()) out.set(rel, sha256File(p));
    }
  };
  walk(root);
  return out;
}

/** A source tree of small and large random files, a symlink and nested dirs. */
export function makeSourceTree(dir: string, opts: { files: number; bigFiles: number; bigSize: number; seed?: number }): void {
  fs.mkdirSync(dir, { recursive: true });
  for (let i = 0; i < opts.files; i++) {
    const sub = path.join(dir, `d${i % 7}`, `e${i % 3}`);
    fs.mkdirSync(sub, { recursive: true });
    fs.writeFileSync(path.join(sub, `f${i}`), crypto.randomBytes(1 + ((i * 7919) % 70_000)));
  }
  for (let i = 0; i < opts.bigFiles; i++) fs.writeFileSync(path.join(dir, `big${i}`), crypto.randomBytes(opts.bigSize));
  fs.symlinkSync('d0/e0/f0', path.join(dir, 'link'));
}

export async function mkfsErofs(image: string, src: string, extra: string[] = []): Promise<void> {
  await runOk('mkfs.erofs', [...extra, image, src], { timeoutMs: 600_000 });
}
