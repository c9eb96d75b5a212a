// No lazy backend (neither fscache on-demand nor fanotify pre-content, or
// config says so): a nydus image still runs. lazysnapd downloads each of
// its blobs whole, through the same content/ path a worker fills ranges
// with (fetch, decompress, verify), into complete blob files, and mounts
// EROFS file-backed on them. Containers start later, and never on zeros.
import path from 'node:path';
import fs from 'node:fs';
import type { Logger } from 'pino';
import type { Config } from '../config/config';
import { pwriteAll, allocAligned } from '../native';
import type { BlobDownloader } from '../mounts/blob-files';
import { clipToSize } from '../content/content';
import { Mounter } from '../mounts/mounter';
import type { FscacheImages } from '../snapshotter/storage/images';
import { MetadataResolver } from '../worker/resolver';
import { remoteOpener } from '../worker/remote-opener';
import { registrySettings, type Fscache, cacheDirOf, snapshotMounts, stateDir } from './setup';

export function startDownload(cfg: Config, images: () => FscacheImages, log: Logger, why: string): Fscache {
  if (!/\berofs$/m.test(fs.readFileSync('/proc/filesystems', 'utf8'))) {
    // EROFS may be a module not loaded yet: mount(2) loads it on demand. Only a kernel without it fails here.
    if (!fs.existsSync(`/lib/modules/${fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim()}/kernel/fs/erofs`)) {
      return { disabledReason: `${why}; and this kernel has no EROFS (CONFIG_EROFS_FS, with CONFIG_EROFS_FS_BACKED_BY_FILE)` };
    }
  }
  log.warn({ reason: why }, 'nydus images are downloaded whole before they run (not lazily)');
  const dir = stateDir(cfg);
  const blobDir = cacheDirOf(cfg);
  const remote = remoteOpener({ registry: registrySettings(cfg), readDeadlineMs: cfg.fscache.read_deadline_ms, blobMetaDir: '' }, log);
  let resolver: MetadataResolver | undefined;
  const download: BlobDownloader = async (volume, tag, fd, size) => {
    resolver ??= MetadataResolver.open(path.join(cfg.root, 'metadata.db'), remote.open);
    const content = await resolver.resolve(volume, tag);
    try {
      const t0 = Date.now();
      const after: Promise<void>[] = []; // writes a fill may leave going on: the caller closes fd once this returns
      await content.fill(0, size, clipToSize(size, async (off, data) => void (await pwriteAll(fd, data, off))), (n) => allocAligned(n), undefined,
        { background: (work) => after.push(work) });
      await Promise.all(after);
      log.info({ blob: tag, bytes: size, ms: Date.now() - t0 }, 'blob downloaded whole');
    } finally {
      resolver.release(content);
    }
  };
  const mounter = new Mounter(images, path.join(dir, 'images'), log, undefined, undefined, { blobDir, download });
  return { mounter, lazy: snapshotMounts(cfg, mounter, images, log), disabledReason: why };
}
