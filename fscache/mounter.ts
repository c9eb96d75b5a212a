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
import { FscacheImage, FscacheImages } from './images';

const exec = promisify(execFile);
const MOUNT_TIMEOUT_MS = 120_000;

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
}

const NAME_RE = /^[A-Za-z0-9._-]{1,64}$/;

export class Mounter {
  constructor(
    private readonly images: () => FscacheImages,
    /** where bootstraps are copied: <root>/fscache/images */
    private readonly imagesDir: string,
    private readonly log: Logger,
    /** the cachefiles cache dir (holds cache/I<volume key>/...) */
    private readonly cacheDir?: string,
  ) {}

  async mount(spec: MountSpec): Promise<FscacheImage> {
    const mountpoint = path.resolve(spec.mountpoint);
    const source = path.resolve(spec.bootstrap);
    if (!fs.existsSync(source)) throw new MountError(`bootstrap ${source} does not exist`);
    if (!fs.statSync(mountpoint, { throwIfNoEntry: false })?.isDirectory()) throw new MountError(`mountpoint ${mountpoint} is not a directory`);
    if (this.images().byMountpoint(mountpoint)) throw new MountError(`${mountpoint} already has a lazysnap mount`);
    const buf = fs.readFileSync(source);
    new ErofsImage(buf, `bootstrap ${source}`); // refuse what the kernel would refuse, with a better message
    const digest = crypto.createHash('sha256').update(buf).digest('hex');
    const fsid = spec.fsid || `lazysnap-${crypto.createHash('sha256').update(`${mountpoint}\0${digest}`).digest('hex').slice(0, 24)}`;
    const domain = spec.domain ?? '';
    for (const [what, v] of [['fsid', fsid], ['domain', domain]] as const) {
      if (v && !NAME_RE.test(v)) throw new MountError(`${what} "${v}" must be 1-64 characters of [A-Za-z0-9._-]`);
    }
    if (this.images().get(fsid)) throw new MountError(`fsid ${fsid} is already in use`);

    // The bootstrap is copied, so the mount never depends on a file the user may change.
    const dir = path.join(this.imagesDir, fsid);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const bootstrap = path.join(dir, 'image.boot');
    fs.writeFileSync(`${bootstrap}.tmp`, buf);
    fs.renameSync(`${bootstrap}.tmp`, bootstrap);
    const blobsDir = spec.imageRef && !spec.blobsDir ? '' : path.resolve(spec.blobsDir ?? path.dirname(source));
    this.images().add({ fsid, domain, bootstrap, blobsDir, imageRef: spec.imageRef, snapshotId: spec.snapshotId });
    const opts = domain ? `domain_id=${domain},fsid=${fsid}` : `fsid=${fsid}`;
    try {
      await exec('mount', ['-t', 'erofs', '-o', `ro,${opts}`, 'none', mountpoint], { timeout: MOUNT_TIMEOUT_MS });
    } catch (err) {
      this.images().remove(fsid);
      fs.rmSync(dir, { recursive: true, force: true });
      const e = err as { stderr?: string; message: string };
      throw new MountError(`mount -t erofs -o ${opts} failed: ${(e.stderr || e.message).trim()}`);
    }
    this.images().setMountpoint(fsid, mountpoint);
    this.log.info({ fsid, domain, mountpoint, bootstrap: source }, 'mounted through fscache');
    return this.images().get(fsid)!;
  }

  async umount(mountpoint: string): Promise<void> {
    const mp = path.resolve(mountpoint);
    const img = this.images().byMountpoint(mp);
    if (!img) throw new MountError(`${mp} is not a lazysnap mount`);
    try {
      await exec('umount', [mp], { timeout: MOUNT_TIMEOUT_MS });
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new MountError(`umount ${mp} failed: ${(e.stderr || e.message).trim()}`);
    }
    this.images().remove(img.fsid);
    fs.rmSync(path.join(this.imagesDir, img.fsid), { recursive: true, force: true });
    const volume = img.domain || img.fsid;
    if (this.images().inVolume(volume).length === 0) this.dropVolume(volume);
    this.log.info({ fsid: img.fsid, mountpoint: mp }, 'unmounted');
  }

  /** Unregisters an image that is not mounted (any more). */
  async forget(fsid: string): Promise<void> {
    const img = this.images().get(fsid);
    if (!img) return;
    this.images().remove(fsid);
    fs.rmSync(path.join(this.imagesDir, fsid), { recursive: true, force: true });
    const volume = img.domain || img.fsid;
    if (this.images().inVolume(volume).length === 0) this.dropVolume(volume);
  }

  /**
   * Deletes the cache files of a volume nothing uses any more. The volume is
   * released at umount (a domain when its last image goes), so the kernel
   * holds none of these files; it would recreate them on the next mount.
   */
  private dropVolume(volume: string): void {
    if (!this.cacheDir) return;
    const dir = path.join(this.cacheDir, 'cache', `Ierofs,${volume}`);
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
