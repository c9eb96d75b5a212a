// Mounting an image through EROFS over fscache, without containerd: the image
// is registered in the metadata first (the worker resolves the kernel's OPENs
// from it), then mount(8) runs as a child process, since the mount blocks
// until the worker has answered the OPENs and READs of the superblock.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { ErofsImage } from '../image/erofs/image';
import { readDeviceTags, readDevices } from './device-tags';
import type { BlobFile } from '../worker/control';
import { BlobDownloader, downloadBlobFiles, fileBackedMount, prepareBlobFiles } from './blob-files';
import { FscacheImage, FscacheImages } from '../snapshotter/storage/images';
import { excerpt } from '../log/excerpt';
import { copyRegularFile, readFailure } from '../config/read-file';
import { MS, mountFs } from '../native';

const exec = promisify(execFile);
const MOUNT_TIMEOUT_MS = 120_000;
/** Far above any bootstrap (a few hundred bytes per file); a bound so that /dev/zero is refused, not read. */
export const MAX_BOOTSTRAP_BYTES = 1 << 30;

export class MountError extends Error {}

export interface MountSpec {
  bootstrap: string;
  mountpoint: string;
  blobsDir?: string;
  domain?: string;
  fsid?: string;
  /** where the blobs are fetched from, for images pulled through containerd */
  imageRef?: string;
  snapshotId?: number;
  /** nosuid,nodev: for mounts the CLI asks for (containers' lower layers live under lazysnapd's 0700 root) */
  nosuid?: boolean;
}

/** mount(8)'s -o for an EROFS over fscache. */
/** An fscache EROFS mount's flags and data for mount(2), and the options as mount(8) would show them. */
export function erofsOptions(o: { fsid: string; domain: string; nosuid?: boolean }): { flags: number; data: string; shown: string } {
  const data = [...(o.domain ? [`domain_id=${o.domain}`] : []), `fsid=${o.fsid}`].join(',');
  return {
    flags: MS.RDONLY | (o.nosuid ? MS.NOSUID | MS.NODEV : 0),
    data,
    shown: ['ro', ...(o.nosuid ? ['nosuid', 'nodev'] : []), data].join(','),
  };
}

const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** a bootstrap being copied into imagesDir ('+' is not in NAME_RE: no fsid's dir starts so) */
const INCOMING = '+incoming-';

export class Mounter {
  /** fsid -> device tags; a mounted image's bootstrap is a private copy that never changes */
  private readonly tags = new Map<string, string[]>();
  /** told how many blobs' cache files were deleted (metrics) */
  onBlobsDropped?: (n: number) => void;
  /**
   * Called with an image's blob files once it is mounted file-backed over a
   * fanotify group: the worker opens them then, all at once, instead of each
   * on its first read, in series on the container's start (a HEAD and three
   * Range GETs each).
   */
  onBlobFilesMounted?: (blobs: BlobFile[]) => void;

  constructor(
    private readonly images: () => FscacheImages,
    /** where bootstraps are copied: <root>/fscache/images */
    private readonly imagesDir: string,
    private readonly log: Logger,
    /** the cachefiles cache dir (holds cache/I<volume key>/...) */
    private readonly cacheDir?: string,
    /** culls cache file `name` in `dir` through /dev/cachefiles; throws EBUSY while the kernel uses it */
    private readonly cull?: (dir: string, name: string) => void,
    /**
     * mount file-backed instead of through fscache, with blob files under
     * blobDir: marked in a fanotify group (filled on demand), or, without
     * one, downloaded whole before the mount
     */
    private readonly fileBacked?: { blobDir: string; groupFd?: number; download?: BlobDownloader },
  ) {}

  private swept = false;

  /** Removes copies a kill interrupted (once: only this lazysnapd copies here, under the instance lock). */
  private sweepIncoming(): void {
    if (this.swept) return;
    this.swept = true;
    let names: string[];
    try {
      names = fs.readdirSync(this.imagesDir);
    } catch {
      return; // not made yet
    }
    for (const n of names) if (n.startsWith(INCOMING)) fs.rmSync(path.join(this.imagesDir, n), { force: true });
  }

  /** how this mounter's images are served */
  get backend(): 'fscache' | 'fanotify' | 'download' {
    if (!this.fileBacked) return 'fscache';
    return this.fileBacked.groupFd === undefined ? 'download' : 'fanotify';
  }

  async mount(spec: MountSpec): Promise<FscacheImage> {
    const mountpoint = path.resolve(spec.mountpoint);
    const source = path.resolve(spec.bootstrap);
    if (!fs.existsSync(source)) throw new MountError(`bootstrap ${excerpt(source)} does not exist`);
    if (!fs.statSync(mountpoint, { throwIfNoEntry: false })?.isDirectory()) throw new MountError(`mountpoint ${excerpt(mountpoint)} is not a directory`);
    if (this.images().byMountpoint(mountpoint)) throw new MountError(`${excerpt(mountpoint)} already has a lazysnap mount`);
    // The bootstrap is copied, so the mount never depends on a file the user may change; hashed as it is copied (it
    // names the fsid), in bounded memory. A copy a kill interrupted is an INCOMING file, swept at the next mount.
    this.sweepIncoming();
    fs.mkdirSync(this.imagesDir, { recursive: true, mode: 0o700 });
    const incoming = path.join(this.imagesDir, `${INCOMING}${crypto.randomBytes(8).toString('hex')}`);
    let bootstrap: string;
    let fsid: string;
    let domain: string;
    try {
      let copied: { sha256: string; head: Buffer };
      try {
        copied = copyRegularFile(source, incoming, MAX_BOOTSTRAP_BYTES, 64 << 10);
      } catch (e) {
        throw new MountError(`bootstrap ${excerpt(source)}: ${readFailure(e)}`);
      }
      // refuse what the kernel would refuse, with a better message (the superblock is in the first block, <= 64 KiB)
      new ErofsImage(copied.head, `bootstrap ${excerpt(source)}`);
      fsid = spec.fsid || `lazysnap-${crypto.createHash('sha256').update(`${mountpoint}\0${copied.sha256}`).digest('hex').slice(0, 24)}`;
      domain = spec.domain ?? '';
      for (const [what, v] of [['fsid', fsid], ['domain', domain]] as const) {
        if (v && !NAME_RE.test(v)) throw new MountError(`${what} "${excerpt(v)}" must be 1-64 characters of [A-Za-z0-9._-]`);
      }
      if (this.images().get(fsid)) throw new MountError(`fsid ${fsid} is already in use`);
      const dir = path.join(this.imagesDir, fsid);
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      bootstrap = path.join(dir, 'image.boot');
      fs.renameSync(incoming, bootstrap);
    } finally {
      fs.rmSync(incoming, { force: true });
    }
    const blobsDir = spec.imageRef && !spec.blobsDir ? '' : path.resolve(spec.blobsDir ?? path.dirname(source));
    this.images().add({ fsid, domain, bootstrap, blobsDir, imageRef: spec.imageRef, snapshotId: spec.snapshotId });
    const volume = domain || fsid;
    let opts = '';
    try {
      if (this.fileBacked) {
        const f = this.fileBacked;
        const prepared = f.groupFd !== undefined ? prepareBlobFiles(f.groupFd, f.blobDir, volume, readDevices(bootstrap)) : undefined;
        const devices = prepared?.map((d) => d.file) ?? await downloadBlobFiles(f.blobDir, volume, readDevices(bootstrap), f.download!);
        const m = fileBackedMount({ devices, nosuid: spec.nosuid });
        opts = m.shown;
        await mountFs(bootstrap, mountpoint, 'erofs', m.flags, m.data);
        const marked = (prepared ?? []).filter((d) => d.marked).map(({ file, size, created }) => ({ file, size, created }));
        if (marked.length) this.onBlobFilesMounted?.(marked);
      } else {
        // mount(2) itself, not mount(8): a fork and exec from lazysnapd cost more than the mount in a UML guest
        const m = erofsOptions({ fsid, domain, nosuid: spec.nosuid });
        opts = m.shown;
        await mountFs('none', mountpoint, 'erofs', m.flags, m.data);
      }
    } catch (err) {
      this.images().remove(fsid);
      fs.rmSync(path.dirname(bootstrap), { recursive: true, force: true });
      if (this.fileBacked && this.images().inVolume(volume).length === 0) this.dropVolume(volume);
      const e = err as { stderr?: string; message: string; code?: string };
      if (!opts) throw new MountError(`cannot ${this.backend === 'download' ? 'download' : 'prepare'} the blob files of ${excerpt(source)}: ${e.message}`);
      const hint = e.code === 'EINVAL' && this.fileBacked ? ' (a kernel without EROFS file-backed mounts, CONFIG_EROFS_FS_BACKED_BY_FILE, Linux >= 6.12?)' : '';
      throw new MountError(`mount -t erofs -o ${opts} failed: ${(e.stderr || e.message).trim()}${hint}`);
    }
    this.images().setMountpoint(fsid, mountpoint);
    this.log.info({ fsid, domain, mountpoint, bootstrap: source, backend: this.backend }, 'mounted');
    return this.images().get(fsid)!;
  }

  async umount(mountpoint: string): Promise<void> {
    const mp = path.resolve(mountpoint);
    const img = this.images().byMountpoint(mp);
    if (!img) throw new MountError(`${excerpt(mp)} is not a lazysnap mount`);
    try {
      await exec('umount', [mp], { timeout: MOUNT_TIMEOUT_MS });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new MountError(`umount ${mp} failed: ${(e.stderr || e.message).trim()}`);
    }
    this.unregister(img);
    this.log.info({ fsid: img.fsid, mountpoint: mp }, 'unmounted');
  }

  /** Unregisters an image that is not mounted (any more). */
  async forget(fsid: string): Promise<void> {
    const img = this.images().get(fsid);
    if (img) this.unregister(img);
  }

  /** Forgets an unmounted image and deletes the cache files no other image of its volume uses. */
  private unregister(img: FscacheImage): void {
    const tags = this.deviceTags(img) ?? [];
    this.tags.delete(img.fsid);
    this.images().remove(img.fsid);
    fs.rmSync(path.join(this.imagesDir, img.fsid), { recursive: true, force: true });
    const volume = img.domain || img.fsid;
    const rest = this.images().inVolume(volume);
    if (rest.length === 0) return this.dropVolume(volume);
    // A shared domain lives on: drop only the blobs that were this image's alone.
    const kept = new Set(rest.flatMap((i) => this.deviceTags(i) ?? []));
    this.dropBlobs(volume, tags.filter((t) => !kept.has(t)));
  }

  /** The blobs a registered image's mount opens (its device tags), read once; null if its bootstrap cannot be read. */
  deviceTags(img: FscacheImage): string[] | null {
    let tags = this.tags.get(img.fsid);
    if (!tags) {
      try {
        tags = readDeviceTags(img.bootstrap);
      } catch (err) {
        this.log.warn({ err: (err as Error).message, fsid: img.fsid }, 'cannot read the device table of an image');
        return null;
      }
      this.tags.set(img.fsid, tags);
    }
    return tags;
  }

  /**
   * Culls the cache files of blobs in a live volume. cachefiles keeps an
   * object's file unlinked while the kernel uses it and links it in when the
   * umount lets go of it, shortly after; until then there is nothing to cull
   * (or cull says EBUSY), so that is retried. A culled file goes to the
   * graveyard, which is emptied here as cachefilesd would.
   */
  private dropBlobs(volume: string, tags: string[]): void {
    if (this.fileBacked) {
      let n = 0;
      for (const tag of tags) {
        const f = path.join(this.fileBacked.blobDir, volume, tag);
        if (fs.existsSync(f)) n++;
        fs.rmSync(f, { force: true });
      }
      if (n) this.onBlobsDropped?.(n);
      return;
    }
    if (!this.cacheDir || !this.cull) return;
    const volumeDir = path.join(this.cacheDir, 'cache', `Ierofs,${volume}`);
    const find = (name: string) => {
      try {
        for (const d of fs.readdirSync(volumeDir)) {
          if (d.startsWith('@') && fs.existsSync(path.join(volumeDir, d, name))) return path.join(volumeDir, d);
        }
      } catch {
        // no cache files yet
      }
      return null;
    };
    for (const tag of tags) {
      const name = `D${tag}`;
      let tries = 0;
      const attempt = () => {
        // an image mounted meanwhile may use the blob again
        if (this.images().inVolume(volume).some((i) => this.deviceTags(i)?.includes(tag))) return;
        const dir = find(name);
        try {
          if (!dir) throw Object.assign(new Error('not linked in yet'), { code: 'EAGAIN' });
          this.cull!(dir, name);
          this.onBlobsDropped?.(1);
          this.emptyGraveyard();
          this.log.info({ volume, blob: tag }, 'culled the cache file of a blob no image uses');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code === 'ESTALE' || code === 'ENOENT') return; // gone already
          if ((code === 'EBUSY' || code === 'EAGAIN') && ++tries < 12) {
            setTimeout(attempt, 100 * tries).unref();
            return;
          }
          this.log.warn({ err: (err as Error).message, volume, blob: tag }, 'cannot cull the cache file of an unused blob');
        }
      };
      attempt();
    }
  }

  /** Drops the cache files of volumes no registered image is in (a crash between an unmount and its cull leaves them). */
  sweep(): void {
    const live = new Set(this.images().all().map((i) => i.domain || i.fsid));
    const dir = this.fileBacked ? this.fileBacked.blobDir : this.cacheDir && path.join(this.cacheDir, 'cache');
    if (!dir || !fs.existsSync(dir)) return;
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const volume = this.fileBacked ? e.name : /^Ierofs,(.+)$/.exec(e.name)?.[1];
      if (!volume || volume.startsWith('.') || live.has(volume)) continue;
      this.log.info({ volume }, 'dropping the cache files of a volume no image uses');
      this.dropVolume(volume);
    }
  }

  private emptyGraveyard(): void {
    const graveyard = path.join(this.cacheDir!, 'graveyard');
    for (const e of fs.existsSync(graveyard) ? fs.readdirSync(graveyard) : []) {
      fs.rmSync(path.join(graveyard, e), { recursive: true, force: true });
    }
  }

  /**
   * Deletes the cache files of a volume nothing uses any more. The volume is
   * released at umount (a domain when its last image goes), so the kernel
   * holds none of these files; it would recreate them on the next mount.
   */
  private dropVolume(volume: string): void {
    if (this.fileBacked) {
      const dir = path.join(this.fileBacked.blobDir, volume);
      const n = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => !f.endsWith('.part')).length : 0;
      fs.rmSync(dir, { recursive: true, force: true });
      if (n) this.onBlobsDropped?.(n);
      return;
    }
    if (!this.cacheDir) return;
    const dir = path.join(this.cacheDir, 'cache', `Ierofs,${volume}`);
    // cache files of data blobs (D<tag>) under the volume's fan-out dirs; the bootstrap's own file is not a blob
    const blobFiles = () => {
      try {
        return fs.readdirSync(dir).filter((d) => d.startsWith('@')).flatMap((d) => fs.readdirSync(path.join(dir, d))).filter((f) => f.startsWith('D') && !f.startsWith('Dlazysnap-')).length;
      } catch {
        return 0;
      }
    };
    const dropped = blobFiles();
    if (dropped) this.onBlobsDropped?.(dropped);
    // fscache withdraws a relinquished volume in the background and may touch
    // its directory once more after umount returns: remove it again a few times.
    let tries = 0;
    const rm = () => {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        this.log.warn({ err: (err as Error).message, dir }, 'cannot remove the cache files of an unused volume');
      }
      if (++tries < 5 && !this.images().inVolume(volume).length) setTimeout(rm, 200 * tries).unref();
    };
    rm();
  }
}
