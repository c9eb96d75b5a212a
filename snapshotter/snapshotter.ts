// The snapshotter: containerd's overlay semantics over a SQLite metadata
// store. Directory changes are ordered around the metadata transaction so
// that a kill -9 at any point leaves only orphans, never a snapshot without
// its directory:
//   create: make new-XXXX, then in the transaction insert the row and rename it to <id>;
//   remove: delete the row, then rename <id> to rm-<id> and delete it.
// Cleanup deletes every directory that no row owns.
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Mount } from '../proto/types';
import { Info, Kind, Labels, Snapshot, Usage } from './storage/info';
import { Layout, mountsFor } from './mounts';
import { matches, parseFilters } from './filters';
import { MetaStore } from './storage/metastore';
import { validateKey, validateLabels } from './storage/snapshots';
import { diskUsage } from './usage';
import { LABEL, bootstrapIn, nydusLayer, remoteRefusal, type Refusal } from './remote';
import { alreadyExists, excerpt, failedPrecondition } from './storage/errors';

/** Gives each existing path its mode; returns what changed (as octal strings). */
export function setModes(modes: [string, number][]): { path: string; from: string; to: string }[] {
  const changed: { path: string; from: string; to: string }[] = [];
  for (const [p, mode] of modes) {
    const st = fs.statSync(p, { throwIfNoEntry: false });
    if (!st || (st.mode & 0o7777) === mode) continue;
    fs.chmodSync(p, mode);
    changed.push({ path: p, from: (st.mode & 0o7777).toString(8).padStart(4, '0'), to: mode.toString(8).padStart(4, '0') });
  }
  return changed;
}

/** Lazy images: where the EROFS of a bootstrap layer is mounted (fscache). */
export interface LazyMounts {
  /** mount when the bootstrap layer is committed (pull time): blobs opened before any container asks */
  readonly mountOnPull?: boolean;
  /** Mounts (once) the image whose bootstrap sits in snapshot `snapshotId`; resolves to its mountpoint. */
  ensure(snapshotId: number, bootstrapFile: string, labels: Labels): Promise<string>;
  /** The bootstrap snapshot is being removed: unmount its image. */
  release(snapshotId: number): Promise<void>;
  /** A container's snapshot is being prepared on the image: it is about to start. */
  starting?(snapshotId: number): void;
  /** …and it is mounted now: the start may be recorded (learned prefetch). Never rejects. */
  started?(snapshotId: number): Promise<void>;
  /** Deletes cached blobs no registered image references. */
  sweep?(): void;
}

export class Snapshotter implements Layout {
  readonly snapshotsDir: string;
  readonly indexOff: boolean;

  /** Set when fscache is available: nydus images are then served lazily. */
  lazy: LazyMounts | undefined;
  /** told of each layer containerd brings: a nydus blob layer (and why it was refused) or a plain one it unpacks (metrics) */
  onLayer?: (kind: 'nydus' | 'oci', refused: Refusal['reason'] | null) => void;

  private constructor(
    readonly root: string,
    readonly store: MetaStore,
    private readonly log: Logger,
  ) {
    this.snapshotsDir = path.join(root, 'snapshots');
    this.indexOff = fs.existsSync('/sys/module/overlay/parameters/index');
  }

  /**
   * Opens (or creates) the snapshotter state under root. A root that existed
   * keeps its mode through mkdir: 0755 left metadata.db (0644 by the umask)
   * readable by everyone. The modes are set here, and a change is logged.
   */
  static open(root: string, log: Logger): Snapshotter {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    const db = path.join(root, 'metadata.db');
    const modes: [string, number][] = [[root, 0o700], ...['', '-wal', '-shm'].map((s): [string, number] => [db + s, 0o600])];
    for (const c of setModes(modes)) log.warn(c, 'lazysnapd state was open to others: mode changed');
    fs.mkdirSync(path.join(root, 'snapshots'), { recursive: true, mode: 0o700 });
    const store = new MetaStore(db);
    setModes(modes); // SQLite just created the ones that were missing, under the umask
    return new Snapshotter(root, store, log);
  }

  close() {
    this.store.close();
  }

  upper(id: number): string {
    return path.join(this.snapshotsDir, String(id), 'fs');
  }

  work(id: number): string {
    return path.join(this.snapshotsDir, String(id), 'work');
  }

  async prepare(key: string, parent: string, labels: Labels): Promise<Mount[]> {
    // before the key or labels reach a log line
    validateKey('snapshot key', key);
    validateLabels(labels);
    if (nydusLayer(labels) === 'blob') {
      const target = labels[LABEL.snapshotRef];
      const refusal = remoteRefusal(labels, this.lazy !== undefined);
      this.onLayer?.('nydus', refusal?.reason ?? null);
      if (!refusal) this.commitRemote(key, target!, parent, labels); // remoteRefusal checked target
      const layer = labels[LABEL.layerDigest] ?? null;
      this.log.warn({ key, image: labels[LABEL.imageRef] ?? null, layer, why: refusal.message }, 'nydus blob layer refused: the pull fails');
      throw failedPrecondition(`lazysnap cannot serve nydus data blob layer ${excerpt(layer ?? key, 80)}: ${refusal.message}`);
    }
    // containerd unpacks a layer into a snapshot it prepares with its chainID as snapshot.ref
    if (labels[LABEL.snapshotRef] && nydusLayer(labels) === null) this.onLayer?.('oci', null);
    return this.mountsOf(this.create(Kind.Active, key, parent, labels), { starting: true });
  }

  async view(key: string, parent: string, labels: Labels): Promise<Mount[]> {
    return this.mountsOf(this.create(Kind.View, key, parent, labels));
  }

  async mounts(key: string): Promise<Mount[]> {
    return this.mountsOf(this.store.view((tx) => tx.get(key)));
  }

  /**
   * A nydus data blob layer is committed without its content, which stays in
   * the registry; containerd then finds it by its snapshot.ref label and
   * parent (List) and skips the download. Always throws AlreadyExists, the
   * answer containerd expects.
   */
  private commitRemote(key: string, target: string, parent: string, labels: Labels): never {
    // Names are per namespace: the same chainID may have different parents in two namespaces.
    const name = `${key.split('/')[0]}/remote/${target}`;
    if (!this.store.view((tx) => tx.exists(name))) {
      this.create(Kind.Committed, name, parent, labels);
      this.log.info({ name, layer: labels[LABEL.layerDigest] }, 'committed a nydus blob layer without downloading it');
    }
    throw alreadyExists(`remote snapshot ${excerpt(target)}`);
  }

  /** Mounts of s; above a nydus bootstrap layer, that layer and the blobs below it are one EROFS mount. */
  private async mountsOf(s: Snapshot, opts: { starting?: boolean } = {}): Promise<Mount[]> {
    if (!this.lazy) return mountsFor(s, this);
    for (let i = 0; i < s.parentIds.length; i++) {
      const boot = bootstrapIn(this.upper(s.parentIds[i]));
      if (!boot) continue;
      const [layer] = this.store.view((tx) => tx.chain([s.parentIds[i]]));
      if (opts.starting) this.lazy.starting?.(layer.id);
      const mountpoint = await this.lazy.ensure(layer.id, boot, layer.labels);
      if (opts.starting) await this.lazy.started?.(layer.id);
      return mountsFor(s, this, [...s.parentIds.slice(0, i).map((id) => this.upper(id)), mountpoint]);
    }
    return mountsFor(s, this);
  }

  // Synchronous from mkdtemp to rename, so Cleanup (same event loop) never
  // sees the temporary directory of a create in progress.
  private create(kind: Kind.Active | Kind.View | Kind.Committed, key: string, parent: string, labels: Labels): Snapshot {
    validateLabels(labels);
    const td = fs.mkdtempSync(path.join(this.snapshotsDir, 'new-'));
    let final: string | undefined;
    try {
      fs.mkdirSync(path.join(td, 'fs'));
      fs.chmodSync(path.join(td, 'fs'), 0o755); // not subject to the umask
      if (kind === Kind.Active) {
        fs.mkdirSync(path.join(td, 'work'));
        fs.chmodSync(path.join(td, 'work'), 0o711);
      }
      return this.store.update((tx) => {
        const s = kind === Kind.Committed ? tx.createCommitted(key, parent, labels) : tx.create(kind, key, parent, labels);
        if (s.parentIds.length > 0) {
          const st = fs.statSync(this.upper(s.parentIds[0]));
          fs.lchownSync(path.join(td, 'fs'), st.uid, st.gid);
        }
        final = path.join(this.snapshotsDir, String(s.id));
        // An id is only reused after a crash between rename and commit; that directory is an orphan.
        fs.rmSync(final, { recursive: true, force: true });
        fs.renameSync(td, final);
        return s;
      });
    } catch (err) {
      fs.rmSync(td, { recursive: true, force: true });
      if (final && !this.store.view((tx) => tx.ids()).has(Number(path.basename(final!)))) {
        fs.rmSync(final, { recursive: true, force: true });
      }
      throw err;
    }
  }

  async commit(name: string, key: string, labels: Labels): Promise<void> {
    validateLabels(labels);
    const { id, kind } = this.store.view((tx) => tx.usage(key));
    const usage = kind === Kind.Active ? await diskUsage(this.upper(id)) : { size: 0, inodes: 0 };
    this.store.update((tx) => tx.commit(key, name, usage, labels));
    // The work dir only matters to an active overlay.
    fs.rmSync(this.work(id), { recursive: true, force: true });
    const boot = this.lazy?.mountOnPull ? bootstrapIn(this.upper(id)) : null;
    if (boot) {
      // Warm on pull: the image is mounted now, and its blobs start arriving before any container asks.
      this.lazy!.ensure(id, boot, labels).catch((err) =>
        this.log.warn({ err: (err as Error).message, name }, 'mounting at pull failed; the first container will retry'),
      );
    }
  }

  async remove(key: string): Promise<void> {
    if (this.lazy) {
      // The image's EROFS goes before the bootstrap layer does; a failed umount keeps the snapshot.
      const { id } = this.store.view((tx) => tx.usage(key));
      if (this.store.view((tx) => tx.hasChildren(key))) throw failedPrecondition(`cannot remove snapshot ${excerpt(key)} with child`);
      if (bootstrapIn(this.upper(id))) await this.lazy.release(id);
    }
    const { id } = this.store.update((tx) => tx.remove(key));
    const dir = path.join(this.snapshotsDir, String(id));
    const doomed = path.join(this.snapshotsDir, `rm-${id}`);
    try {
      fs.renameSync(dir, doomed);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    await fs.promises.rm(doomed, { recursive: true, force: true }).catch((err) => {
      this.log.warn({ err, dir: doomed }, 'failed to remove snapshot directory; Cleanup will retry');
    });
  }

  stat(key: string): Info {
    return this.store.view((tx) => tx.stat(key));
  }

  update(info: Info, paths: string[]): Info {
    return this.store.update((tx) => tx.update(info, paths));
  }

  list(filters: string[]): Info[] {
    const f = parseFilters(filters);
    return this.store.view((tx) => tx.list()).filter((i) => matches(f, i));
  }

  /** Every snapshot, unfiltered, one at a time from one consistent view: List's stream filters them a slice at a time. */
  walk(): Generator<Info> {
    return this.store.walk();
  }

  async usage(key: string): Promise<Usage> {
    const { id, kind, usage } = this.store.view((tx) => tx.usage(key));
    return kind === Kind.Active ? diskUsage(this.upper(id)) : usage;
  }

  /** Removes every directory under snapshots/ that no snapshot owns. */
  async cleanup(): Promise<string[]> {
    const owned = this.store.view((tx) => tx.ids());
    const removed: string[] = [];
    for (const name of fs.readdirSync(this.snapshotsDir)) {
      if (/^\d+$/.test(name) && owned.has(Number(name))) continue;
      let p = path.join(this.snapshotsDir, name);
      if (/^\d+$/.test(name)) {
        // A create may have claimed this id since the snapshot above (only
        // after a crash); re-check and move it aside in one synchronous step.
        if (this.store.view((tx) => tx.ids()).has(Number(name))) continue;
        const doomed = path.join(this.snapshotsDir, `rm-${name}`);
        fs.renameSync(p, doomed);
        p = doomed;
      }
      await fs.promises.rm(p, { recursive: true, force: true });
      removed.push(name);
    }
    if (removed.length) this.log.info({ removed }, 'cleanup removed orphaned directories');
    // and the cached blobs no registered image references (left by a crash between unmount and cull)
    this.lazy?.sweep?.();
    return removed;
  }
}
