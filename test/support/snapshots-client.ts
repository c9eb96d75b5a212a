// A promise-based client of containerd.services.snapshots.v1.Snapshots, as
// containerd's proxy would call it. For tests and the CLI.
import * as grpc from '@grpc/grpc-js';
import { snapshotsService } from '../../proto/load';
import type { Mount, WireInfo } from '../../proto/types';

export class SnapshotsClient {
  private readonly c: any;
  constructor(
    address: string,
    readonly name = 'lazysnap',
  ) {
    const Ctor = snapshotsService();
    this.c = new Ctor(`unix://${address}`, grpc.credentials.createInsecure());
  }

  private call<T>(method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) =>
      this.c[method]({ snapshotter: this.name, ...req }, { deadline: Date.now() + 30_000 }, (err: Error | null, res: T) =>
        err ? reject(err) : resolve(res),
      ),
    );
  }

  prepare(key: string, parent = '', labels: Record<string, string> = {}) {
    return this.call<{ mounts: Mount[] }>('Prepare', { key, parent, labels }).then((r) => r.mounts);
  }
  view(key: string, parent = '', labels: Record<string, string> = {}) {
    return this.call<{ mounts: Mount[] }>('View', { key, parent, labels }).then((r) => r.mounts);
  }
  mounts(key: string) {
    return this.call<{ mounts: Mount[] }>('Mounts', { key }).then((r) => r.mounts);
  }
  commit(name: string, key: string, labels: Record<string, string> = {}) {
    return this.call<object>('Commit', { name, key, labels });
  }
  remove(key: string) {
    return this.call<object>('Remove', { key });
  }
  stat(key: string) {
    return this.call<{ info: WireInfo }>('Stat', { key }).then((r) => r.info);
  }
  update(info: Partial<WireInfo> & { name: string }, paths: string[] = []) {
    return this.call<{ info: WireInfo }>('Update', { info, update_mask: { paths } }).then((r) => r.info);
  }
  usage(key: string) {
    return this.call<{ size: string; inodes: string }>('Usage', { key }).then((r) => ({ size: Number(r.size), inodes: Number(r.inodes) }));
  }
  cleanup() {
    return this.call<object>('Cleanup', {});
  }
  list(filters: string[] = []): Promise<WireInfo[]> {
    return new Promise((resolve, reject) => {
      const out: WireInfo[] = [];
      const s = this.c.List({ snapshotter: this.name, filters }, { deadline: Date.now() + 30_000 });
      s.on('data', (r: { info: WireInfo[] }) => out.push(...r.info));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
  }
  close() {
    this.c.close();
  }
}
