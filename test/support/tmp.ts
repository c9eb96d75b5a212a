// Per-test scratch directories under /tmp/lazysnap-test-*. Daemons mount
// things beneath them (container rootfs, snapshot mounts), so cleanup
// unmounts everything below the directory before deleting it.
import { mkdtemp, readFile, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './proc';

const PREFIX = 'lazysnap-test-';

/** Creates /tmp/lazysnap-test-[label-]XXXXXX (unix socket paths must stay under 108 bytes). */
export async function makeTempDir(label = ''): Promise<string> {
  // Always /tmp, whatever TMPDIR says: socket paths must stay short.
  return mkdtemp(join('/tmp', PREFIX + (label ? `${label}-` : '')));
}

/** Mount points at or below dir, deepest first (from /proc/self/mountinfo). */
export async function mountsUnder(dir: string): Promise<string[]> {
  const root = await realpath(dir).catch(() => dir);
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const points = new Set<string>();
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 5) continue;
    const mp = unescapeMountPath(fields[4]);
    if (mp === root || mp.startsWith(root + '/')) points.add(mp);
  }
  return [...points].sort((a, b) => depth(b) - depth(a) || b.length - a.length);
}

/** Lazily unmounts everything at or below dir; repeats because one path can carry stacked mounts. */
export async function unmountAll(dir: string): Promise<void> {
  for (let pass = 0; pass < 10; pass++) {
    const points = await mountsUnder(dir);
    if (points.length === 0) return;
    for (const mp of points) {
      await run('umount', ['-l', mp], { timeoutMs: 10_000 }); // failures show up as leftovers on the next pass
    }
  }
  const left = await mountsUnder(dir);
  if (left.length > 0) throw new Error(`could not unmount beneath ${dir}: ${left.join(', ')}`);
}

/** Unmounts and deletes a directory made by makeTempDir. Refuses other paths. */
export async function removeTempDir(dir: string): Promise<void> {
  if (!dir.startsWith(`/tmp/${PREFIX}`)) throw new Error(`refusing to remove ${dir}: not a ${PREFIX}* directory`);
  await unmountAll(dir);
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

// mountinfo escapes space, tab, newline and backslash as \ooo octal.
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function depth(p: string): number {
  return p.split('/').length;
}
