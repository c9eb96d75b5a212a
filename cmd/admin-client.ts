// The CLI's client of lazysnapd's Admin service.
import * as grpc from '@grpc/grpc-js';
import { adminService } from '../proto/load';
import type { MountRequest, MountResponse, StatusResponse, TraceResponse } from '../proto/types';
import type { Trace } from '../snapshotter/storage/traces';

/** An error lazysnapd reported, or its absence: printed as one line. */
export class AdminError extends Error {}

export class AdminClient {
  private readonly c: any;
  constructor(readonly address: string) {
    const Ctor = adminService();
    this.c = new Ctor(`unix://${address}`, grpc.credentials.createInsecure());
  }

  private call<T>(method: string, req: object, timeoutMs: number): Promise<T> {
    return new Promise((resolve, reject) =>
      this.c[method](req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (!err) return resolve(res);
        if (err.code === grpc.status.UNAVAILABLE) reject(new AdminError(`lazysnapd is not reachable at ${this.address} (${err.details})`));
        else reject(new AdminError(err.details || err.message));
      }),
    );
  }

  mount(req: Partial<MountRequest> & { bootstrap: string; mountpoint: string }): Promise<MountResponse> {
    return this.call('Mount', req, 180_000);
  }
  umount(mountpoint: string): Promise<object> {
    return this.call('Umount', { mountpoint }, 180_000);
  }
  /** brief: lazysnapd's own state only (see StatusRequest in admin.proto) */
  async status(opts: { brief?: boolean } = {}): Promise<Record<string, unknown>> {
    const r = await this.call<StatusResponse>('Status', { brief: opts.brief === true }, 15_000);
    return JSON.parse(r.json);
  }
  async traces(image: string, forget = false): Promise<Trace[]> {
    const r = await this.call<TraceResponse>('Trace', { image, forget }, 15_000);
    return JSON.parse(r.json);
  }
  /** Stores traces from elsewhere; resolves to those stored (a key that has a trace keeps it). */
  async loadTraces(json: string): Promise<Trace[]> {
    const r = await this.call<TraceResponse>('Trace', { load: json }, 15_000);
    return JSON.parse(r.json);
  }
  close(): void {
    this.c.close();
  }
}
