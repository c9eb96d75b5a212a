// A worker serving a fanotify group: the journal, the daemon, the poller,
// and the events a dead predecessor left unanswered.
import type { Logger } from 'pino';
import type { WorkerSettings } from './settings';
import type { Serving } from './worker';
import { replayPlanOf, type MetadataResolver } from './resolver';
import type { TraceRecorder } from './learn/trace-recorder';
import { contentStatus } from './control';
import type { ReadObserver } from '../content/content';
import { FanotifyDaemon } from './fanotify/daemon';
import { GroupPoller, allBlobFiles, deadJournals, groupIO, openJournal, reserveFds } from './fanotify/group';
import { startKeeper } from './fanotify/keeper';

/** how often orphans wait for a live worker's journal (a retiring one) to go */
const RESCAN_MS = 200;

export function serveFanotify(groupFd: number, resolver: MetadataResolver, s: WorkerSettings, log: Logger, onRead?: ReadObserver, recorder?: TraceRecorder): Serving {
  const journal = openJournal(s.journalDir);
  // after the journal (its open fd is how a successor finds the keeper), before the first event
  const keeper = startKeeper(() => journal.inUse === 0);
  log.debug({ keeper }, 'fd table kept');
  let poller: GroupPoller | undefined;
  const daemon = new FanotifyDaemon(groupIO(groupFd), journal, resolver, log, {
    blobDir: s.blobDir,
    readAttempts: 4,
    retryDelayMs: 50,
    readDeadlineMs: s.readDeadlineMs,
    onAnswered: () => poller?.resume(),
    onRead,
    recorder,
    replayPlan: replayPlanOf(resolver, s.learn.replay, log),
  });
  poller = new GroupPoller(groupFd, () => daemon.drain(), (err) => log.error({ err: err.message }, 'reading the fanotify group failed'));

  const answerOrphans = async () => {
    // journals first: the reads that answer a dead worker's events are recorded too
    recorder?.scan();
    let dead = deadJournals(s.journalDir);
    // Their numbers are held before the first read: none of this worker's own events can take one.
    const reserved = reserveFds(dead.orphans.map((o) => o.event.fd));
    if (dead.orphans.length > 0) {
      log.warn({ orphans: dead.orphans.length, heldElsewhere: reserved.heldElsewhere }, 'a dead worker left events unanswered; filling and answering them');
    }
    poller!.start();
    try {
      // A live worker's journal (a retiring one) is not ours to answer: wait until it is gone.
      while (dead.alive.length > 0) {
        await new Promise((r) => setTimeout(r, RESCAN_MS));
        dead = deadJournals(s.journalDir);
      }
      await daemon.answerOrphans(dead.orphans, () => allBlobFiles(s.blobDir));
      dead.remove();
    } finally {
      reserved.release();
    }
  };

  return {
    start: () => void answerOrphans().catch((err) => log.error({ err }, 'answering orphaned events failed')),
    stop: () => poller?.stop(),
    openBlobs: (blobs) => daemon.openBlobs(blobs),
    requests: daemon,
    get reading() {
      return poller?.reading ?? false;
    },
    status: () => ({
      pid: process.pid,
      backend: 'fanotify',
      stats: daemon.stats,
      pending: daemon.pending,
      objects: daemon.objects().map((b, i) => {
        const [volume, cookie] = b.rel.split('/');
        return {
          objectId: i,
          volume,
          cookie,
          size: b.size,
          reads: b.reads,
          bytesWritten: b.bytesWritten,
          ...contentStatus(b.content),
        };
      }),
    }),
  };
}
