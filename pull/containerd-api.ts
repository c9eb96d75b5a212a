// A client of the containerd services `lazysnap pull` needs (content,
// images, leases, diff, snapshots), on containerd's own socket. Every call
// carries the namespace, and the lease once one is set.
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../proto/load';
import type { Mount } from '../proto/types';

export interface ApiDescriptor {
  media_type: string;
  digest: string;
  size: number | string;
  annotations?: Record<string, string>;
}

/** gRPC status codes containerd answers with (errdefs). */
export const Code = { NOT_FOUND: 5, ALREADY_EXISTS: 6, FAILED_PRECONDITION: 9 } as const;

export const codeOf = (e: unknown): number | undefined => (e as { code?: number }).code;

/** content writes go in pieces below containerd's 16 MiB message bound */
const WRITE_PIECE = 1 << 20;

type Ctor = grpc.ServiceClientConstructor;

function service(file: string, name: string): Ctor {
  let o = loadProto(file) as Record<string, unknown>;
  for (const part of name.split('.')) o = o[part] as Record<string, unknown>;
  return o as unknown as Ctor;
}

export class ContainerdApi {
  private readonly clients: Record<string, any> = {};
  private lease?: string;

  constructor(readonly address: string, readonly namespace: string, private readonly timeoutMs = 120_000) {
    const target = `unix://${address}`;
    const creds = grpc.credentials.createInsecure();
    const make = (file: string, name: string) => new (service(file, name))(target, creds, { 'grpc.max_send_message_length': 16 << 20 });
    this.clients.content = make('containerd/services/content/v1/content.proto', 'containerd.services.content.v1.Content');
    this.clients.images = make('containerd/services/images/v1/images.proto', 'containerd.services.images.v1.Images');
    this.clients.leases = make('containerd/services/leases/v1/leases.proto', 'containerd.services.leases.v1.Leases');
    this.clients.diff = make('containerd/services/diff/v1/diff.proto', 'containerd.services.diff.v1.Diff');
    this.clients.snapshots = make('containerd/services/snapshots/v1/snapshots.proto', 'containerd.services.snapshots.v1.Snapshots');
  }

  private meta(): grpc.Metadata {
    const m = new grpc.Metadata();
    m.set('containerd-namespace', this.namespace);
    if (this.lease) m.set('containerd-lease', this.lease);
    return m;
  }

  private call<T>(svc: string, method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) =>
      this.clients[svc][method](req, this.meta(), { deadline: Date.now() + this.timeoutMs }, (err: Error | null, res: T) =>
        err ? reject(err) : resolve(res)),
    );
  }

  /** A lease that expires by itself if this process dies mid-pull. */
  async withLease<T>(f: () => Promise<T>): Promise<T> {
    const id = `lazysnap-pull-${randomBytes(6).toString('hex')}`;
    const expire = new Date(Date.now() + 3600_000).toISOString();
    await this.call('leases', 'Create', { id, labels: { 'containerd.io/gc.expire': expire } });
    this.lease = id;
    try {
      return await f();
    } finally {
      this.lease = undefined;
      await this.call('leases', 'Delete', { id, sync: false }).catch(() => undefined);
    }
  }

  async hasContent(digest: string): Promise<boolean> {
    try {
      await this.call('content', 'Info', { digest });
      return true;
    } catch (e) {
      if (codeOf(e) === Code.NOT_FOUND) return false;
      throw e;
    }
  }

  /** Writes a blob and commits it with its digest and labels; one already there keeps its bytes and gets the labels. */
  async putContent(digest: string, data: Buffer, labels: Record<string, string>): Promise<void> {
    await this.writeContent(digest, data, labels);
    const paths = Object.keys(labels).map((k) => `labels.${k}`);
    if (paths.length > 0) await this.call('content', 'Update', { info: { digest, labels }, update_mask: { paths } });
  }

  private writeContent(digest: string, data: Buffer, labels: Record<string, string>): Promise<void> {
    return new Promise((resolve, reject) => {
      const stream = this.clients.content.Write(this.meta(), { deadline: Date.now() + this.timeoutMs });
      const ref = `lazysnap-pull-${digest}`;
      const pieces: object[] = [];
      for (let off = 0; off < data.length; off += WRITE_PIECE) {
        pieces.push({ action: 1, ref, total: data.length, offset: off, data: data.subarray(off, off + WRITE_PIECE) });
      }
      pieces.push({ action: 2, ref, total: data.length, expected: digest, offset: data.length, labels });
      let next = 0;
      let done = false;
      const send = () => stream.write(pieces[next++]);
      stream.on('data', () => {
        if (next < pieces.length) send();
        else { done = true; stream.end(); }
      });
      stream.on('error', (e: Error) => (codeOf(e) === Code.ALREADY_EXISTS ? resolve() : reject(e)));
      stream.on('end', () => (done ? resolve() : reject(new Error(`content write of ${digest} ended early`))));
      send();
    });
  }

  /** Creates the image record, or points an existing one at target. */
  async putImage(name: string, target: ApiDescriptor): Promise<void> {
    try {
      await this.call('images', 'Create', { image: { name, target } });
    } catch (e) {
      if (codeOf(e) !== Code.ALREADY_EXISTS) throw e;
      await this.call('images', 'Update', { image: { name, target }, update_mask: { paths: ['target'] } });
    }
  }

  snapshot(snapshotter: string) {
    const call = <T>(method: string, req: object) => this.call<T>('snapshots', method, { snapshotter, ...req });
    return {
      stat: async (key: string): Promise<boolean> => {
        try {
          await call('Stat', { key });
          return true;
        } catch (e) {
          if (codeOf(e) === Code.NOT_FOUND) return false;
          throw e;
        }
      },
      prepare: (key: string, parent: string, labels: Record<string, string>) =>
        call<{ mounts: Mount[] }>('Prepare', { key, parent, labels }).then((r) => r.mounts),
      commit: (name: string, key: string, labels: Record<string, string>) => call('Commit', { name, key, labels }),
      remove: (key: string) => call('Remove', { key }),
    };
  }

  async apply(diff: ApiDescriptor, mounts: Mount[]): Promise<void> {
    await this.call('diff', 'Apply', { diff, mounts });
  }

  close(): void {
    for (const c of Object.values(this.clients)) c.close();
  }
}
