// lazysnapd's side of the fanotify backend: the pre-content group is made
// once and held for lazysnapd's whole life (and parked in systemd's fd
// store), so no worker's death releases it: a group whose last fd closes
// answers every pending event with "allow", and readers get zeros.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config/config';
import { fanotifyInit, sdListenFds, sdNotify } from '../native';
import { fanotifyUnsupported } from '../mounts/blob-files';
import { Mounter } from '../mounts/mounter';
import type { FscacheImages } from '../snapshotter/storage/images';
import { EVENT_FD_FLAGS, FAN } from '../worker/fanotify/events';
import { previousWorkers, retireWorkers, takeFdFrom } from '../worker/takeover';
import { groupFromKeepers } from '../worker/fanotify/keeper';
import { startDownload } from './download';
import { type Fscache, FscacheSetupError, cacheDirOf, snapshotMounts, startSupervisor, stateDir } from './setup';

export const FANOTIFY_FDSTORE_NAME = 'fanotify';

/** What an fd is, from /proc: a fanotify group reads "anon_inode:[fanotify]". */
const isGroupLink = (link: string) => link === 'anon_inode:[fanotify]';
function isFanotifyGroup(fd: number): boolean {
  try {
    return isGroupLink(fs.readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return false;
  }
}

export async function startFanotify(cfg: Config, images: () => FscacheImages, log: Logger, whyNotFscache?: string): Promise<Fscache> {
  const fail = (reason: string): Fscache => {
    const full = whyNotFscache ? `${reason}; and fscache: ${whyNotFscache}` : reason;
    if (cfg.fscache.backend === 'auto') return startDownload(cfg, images, log, `no lazy backend: fanotify: ${full}`);
    if (cfg.fscache.enabled === true) throw new FscacheSetupError(full);
    log.info({ reason: full }, 'no lazy backend; lazy images cannot be served');
    return { disabledReason: full };
  };
  const dir = stateDir(cfg);
  const blobDir = cacheDirOf(cfg);
  const stored = sdListenFds().find((f) => f.name === FANOTIFY_FDSTORE_NAME);
  // a dead worker's keeper also keeps its takeover socket listening, with nobody to answer: asked first
  const kept = stored ? undefined : groupFromKeepers(path.join(dir, 'journals'), isGroupLink);
  const fromWorker = stored || kept ? null : await takeFdFrom(path.join(dir, 'takeover.sock'));
  let groupFd: number;
  if (stored && isFanotifyGroup(stored.fd)) {
    groupFd = stored.fd;
    log.info({ fd: groupFd }, 'took the fanotify group back from the systemd fd store');
  } else if (kept) {
    groupFd = kept.fd;
    log.warn({ fd: groupFd, keeper: kept.keeper }, 'lazysnapd and its worker had both died: took the fanotify group back from the dead worker\'s fd keeper');
  } else if (fromWorker !== null && isFanotifyGroup(fromWorker)) {
    groupFd = fromWorker;
    log.info({ fd: groupFd }, 'took the fanotify group back from the running worker');
  } else {
    if (fromWorker !== null) fs.closeSync(fromWorker); // a /dev/cachefiles fd of a run with the other backend
    try {
      groupFd = fanotifyInit(FAN.CLASS_PRE_CONTENT | FAN.CLOEXEC | FAN.NONBLOCK | FAN.UNLIMITED_QUEUE | FAN.UNLIMITED_MARKS, EVENT_FD_FLAGS);
    } catch (err) {
      return fail(`cannot create a fanotify pre-content group: ${(err as Error).message}`);
    }
    const why = fanotifyUnsupported(groupFd, blobDir);
    if (why) {
      fs.closeSync(groupFd);
      return fail(why);
    }
    log.info({ blobDir }, 'serving lazy images through fanotify pre-content events');
  }
  if (sdNotify(`FDSTORE=1\nFDNAME=${FANOTIFY_FDSTORE_NAME}`, [groupFd])) log.info('gave the fanotify group to the systemd fd store');
  await retireWorkers(previousWorkers(path.join(dir, 'workers.json')), log);
  const supervisor = startSupervisor(cfg, groupFd, { backend: 'fanotify', blobDir, journalDir: path.join(dir, 'journals') }, log);
  const mounter = new Mounter(images, path.join(dir, 'images'), log, undefined, undefined, { groupFd, blobDir });
  mounter.onBlobFilesMounted = (blobs) => supervisor.openBlobs(blobs);
  return { supervisor, mounter, lazy: snapshotMounts(cfg, mounter, images, log, supervisor) };
}
