// LazyMounts over fscache: the image whose bootstrap a snapshot holds is
// mounted once, at <root>/mounts/<snapshot id>, with an fsid derived from the
// snapshot, in the configured shared domain (so a blob used by two images is
// fetched once). Its blobs come from the registry named by cri.image-ref.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { LazyMounts } from '../snapshotter/snapshotter';
import type { Labels } from '../snapshotter/storage/info';
import { LABEL } from '../snapshotter/remote';
import type { FscacheImages } from '../snapshotter/storage/images';
import { Mounter } from './mounter';
import type { Learning } from './learning';

export class SnapshotMounts implements LazyMounts {
  /** ensure() calls in flight per snapshot: two Prepares on one image mount it once */
  private readonly pending = new Map<number, Promise<string>>();
  /** images being culled from the cache: an ensure() waits for that, then mounts again */
  private readonly evicting = new Map<number, Promise<unknown>>();
  /** when a container last needed each image (ms), for culling the least recently used */
  private readonly lastUsed = new Map<number, number>();
  /** learned prefetch: records a start of an image that has no trace yet */
  learning?: Learning;

  constructor(
    private readonly mounter: Mounter,
    private readonly images: () => FscacheImages,
    private readonly mountsDir: string,
    private readonly domain: string,
    private readonly log: Logger,
    /** mount as soon as the bootstrap layer is committed, so the worker starts fetching */
    readonly mountOnPull = false,
    /** called when a container is about to start on an image (prefetch holds back) */
    private readonly onStarting?: (snapshotId: number) => void,
  ) {}

  starting(snapshotId: number): void {
    this.onStarting?.(snapshotId);
  }

  /** The image is mounted and a container is about to start on it: its start may be recorded. */
  async started(snapshotId: number): Promise<void> {
    const img = this.learning && this.images().bySnapshot(snapshotId);
    if (!img) return;
    await this.learning!.begin(img).catch((err) =>
      this.log.warn({ snapshotId, err: (err as Error).message }, 'cannot record this start; it runs unrecorded'));
  }

  ensure(snapshotId: number, bootstrapFile: string, labels: Labels): Promise<string> {
    this.lastUsed.set(snapshotId, Date.now());
    const ev = this.evicting.get(snapshotId);
    if (ev) return ev.then(() => this.ensure(snapshotId, bootstrapFile, labels));
    let p = this.pending.get(snapshotId);
    if (!p) {
      p = this.mount(snapshotId, bootstrapFile, labels).finally(() => this.pending.delete(snapshotId));
      this.pending.set(snapshotId, p);
    }
    return p;
  }

  private async mount(snapshotId: number, bootstrapFile: string, labels: Labels): Promise<string> {
    const mountpoint = path.join(this.mountsDir, String(snapshotId));
    const known = this.images().bySnapshot(snapshotId);
    if (known?.mountpoint && isMounted(known.mountpoint)) return known.mountpoint;
    if (known) {
      // Registered but not mounted (a reboot, or a crash between the two): start over.
      await this.mounter.forget(known.fsid);
    }
    const imageRef = labels[LABEL.imageRef] ?? '';
    if (!imageRef) {
      this.log.error({ snapshotId }, 'nydus bootstrap layer without a cri.image-ref label: its blobs cannot be located');
    }
    fs.mkdirSync(mountpoint, { recursive: true, mode: 0o700 });
    const img = await this.mounter.mount({
      bootstrap: bootstrapFile,
      mountpoint,
      fsid: `lazysnap-snap-${snapshotId}`,
      domain: this.domain || undefined,
      imageRef,
      snapshotId,
    });
    this.log.info({ snapshotId, fsid: img.fsid, imageRef }, 'image mounted lazily');
    return mountpoint;
  }

  sweep(): void {
    this.mounter.sweep();
  }

  /** When a container last needed the image (0: not since lazysnapd started). */
  lastUsedMs(snapshotId: number): number {
    return this.lastUsed.get(snapshotId) ?? 0;
  }

  /**
   * Unmounts the image of snapshot `snapshotId` and culls its blobs, if
   * `idle()` still says no container stands on it once mounts of it are held
   * back (a Prepare from now on waits, then mounts it again). A Prepare that
   * came first has made its snapshot already, so idle() sees it.
   */
  async evict(snapshotId: number, idle: () => boolean): Promise<boolean> {
    await this.pending.get(snapshotId)?.catch(() => undefined);
    if (this.evicting.has(snapshotId) || !idle()) return false;
    const done = this.release(snapshotId);
    this.evicting.set(snapshotId, done.catch(() => undefined));
    try {
      await done;
    } finally {
      this.evicting.delete(snapshotId);
    }
    this.lastUsed.delete(snapshotId);
    return true;
  }

  async release(snapshotId: number): Promise<void> {
    const img = this.images().bySnapshot(snapshotId);
    if (!img) return;
    this.learning?.finish(img.fsid);
    if (img.mountpoint && isMounted(img.mountpoint)) await this.mounter.umount(img.mountpoint);
    else await this.mounter.forget(img.fsid);
    fs.rmSync(path.join(this.mountsDir, String(snapshotId)), { recursive: true, force: true });
  }
}

export function isMounted(dir: string): boolean {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === dir);
}
