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
import { Info, Kind, Labels, Snapshot, Usage } from './info';
import { Layout, mountsFor } from './mounts';
import { matches, parseFilters } from './filters';
import { MetaStore } from './storage/metastore';
import { validateLabels } from './storage/snapshots';
import { diskUsage } from './usage';

export class Snapshotter implements Layout {
  readonly snapshotsDir: string;
  readonly indexOff: boolean;

  private constructor(
    readonly root: string,
    readonly store: MetaStore,
    private readonly log: Logger,
  ) {
    this.snapshotsDir = path.join(root, 'snapshots');
    this.indexOff = fs.existsSync('/sys/module/overlay/parameters/index');
  }

  /** Opens (or creates) the snapshotter state under root. */
  static open(root: string, log: Logger): Snapshotter {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.join(root, 'snapshots'), { recursive: true, mode: 0o700 });
    const store = new MetaStore(path.join(root, 'metadata.db'));
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

  prepare(key: string, parent: string, labels: Labels): Mount[] {
    return mountsFor(this.create(Kind.Active, key, parent, labels), this);
  }

  view(key: string, parent: string, labels: Labels): Mount[] {
    return mountsFor(this.create(Kind.View, key, parent, labels), this);
  }

  mounts(key: string): Mount[] {
    return mountsFor(this.store.view((tx) => tx.get(key)), this);
  }

  // Synchronous from mkdtemp to rename, so Cleanup (same event loop) never
  // sees the temporary directory of a create in progress.
  private create(kind: Kind.Active | Kind.View, key: string, parent: string, labels: Labels): Snapshot {
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
        const s = tx.create(kind, key, parent, labels);
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
  }

  async remove(key: string): Promise<void> {
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
    return removed;
  }
}
