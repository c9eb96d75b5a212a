// lazysnap.v1.Admin: what the lazysnap CLI asks lazysnapd for.
import fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type * as w from '../proto/types';
import type { FscacheSupervisor } from '../supervisor/supervisor';
import { Mounter, MountError } from '../mounts/mounter';
import type { FscacheImages } from '../snapshotter/storage/images';
import { codeOf, detailsOf } from '../snapshotter/storage/errors';
import { allowedMountpoint } from './mount-policy';
import type { WorkerObjectStatus } from '../worker/control';
import type { BadChunk } from '../content/content';
import type { Info } from '../snapshotter/storage/info';
import { inventory } from './inventory';
import { TraceFormatError, parseTraces, type Traces } from '../snapshotter/storage/traces';

export type WorkerObject = Pick<WorkerObjectStatus, 'volume' | 'cookie' | 'size' | 'present' | 'chunks'>;

export interface AdminDeps {
  mounter?: Mounter;
  supervisor?: FscacheSupervisor;
  images: () => FscacheImages;
  fscacheDisabledReason?: string;
  /** the kernel interface lazy images are served through */
  backend?: 'fscache' | 'fanotify' | 'download';
  /** admin.mount_dirs: Mount only beneath these */
  mountDirs: string[];
  /** what status says of lazysnapd itself */
  about: { version: string; config: string; root: string; address: string };
  /** the snapshots, for the images they hold */
  snapshots?: () => Info[];
  /** learned prefetch traces */
  traces?: () => Traces;
  /** the cache: where, how full, its bound (0: none) and how many images were culled */
  cache?: () => Promise<{ dir: string; usage: number; maxBytes: number; lowWaterBytes: number; evictions: number }>;
  log: Logger;
}

export interface BlobStatus {
  blob: string;
  /** whether the serving worker has the blob open (the kernel opens it again on its next READ after a failover) */
  open: boolean;
  bytes: number | null;
  bytesPresent: number | null;
  fetchedBytes: number | null;
  /** chunks whose bytes give EIO for now (failed verification), when there are any */
  badChunks?: BadChunk[];
}

/** An image's blobs, in device-table order; those the worker has not (re)opened are listed as not open. */
export function blobsOf(volume: string, fsid: string, tags: string[] | null, objects: WorkerObject[]): BlobStatus[] {
  const mine = objects.filter((o) => o.volume === volume && o.cookie !== fsid && (!tags || tags.includes(o.cookie)));
  const opened = (o: WorkerObject): BlobStatus => ({
    blob: o.cookie, open: true, bytes: o.present?.bytes ?? o.size, bytesPresent: o.present?.bytesPresent ?? null, fetchedBytes: o.present?.fetchedBytes ?? null,
    ...(o.chunks?.badChunks.length ? { badChunks: o.chunks.badChunks } : {}),
  });
  if (!tags) return mine.map(opened);
  return tags.map((t) => {
    const o = mine.find((x) => x.cookie === t);
    return o ? opened(o) : { blob: t, open: false, bytes: null, bytesPresent: null, fetchedBytes: null };
  });
}

export function adminHandlers(d: AdminDeps): grpc.UntypedServiceImplementation {
  const unary =
    <Req, Res>(fn: (req: Req) => Promise<Res>) =>
    (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
      fn(call.request).then(
        (r) => cb(null, r),
        (err: Error) => {
          const code = err instanceof MountError ? grpc.status.FAILED_PRECONDITION
            : err instanceof TraceFormatError ? grpc.status.INVALID_ARGUMENT : codeOf(err);
          if (code === grpc.status.UNKNOWN) d.log.error({ err }, 'admin request failed');
          cb({ code, details: detailsOf(err) });
        },
      );
    };
  const needFscache = () => {
    if (!d.mounter) throw new MountError(`fscache is not available: ${d.fscacheDisabledReason ?? 'disabled'}`);
    return d.mounter;
  };
  return {
    Mount: unary(async (r: w.MountRequest): Promise<w.MountResponse> => {
      // the place is checked first: a refusal does not depend on the host having fscache
      const mountpoint = allowedMountpoint(r.mountpoint, d.mountDirs);
      const img = await needFscache().mount({
        bootstrap: r.bootstrap,
        mountpoint,
        nosuid: true,
        blobsDir: r.blobs_dir || undefined,
        domain: r.domain || undefined,
        fsid: r.fsid || undefined,
        imageRef: r.image_ref || undefined,
      });
      return { fsid: img.fsid, domain: img.domain };
    }),
    Umount: unary(async (r: w.UmountRequest) => {
      // mounts are registered by their real path (see allowedMountpoint)
      const mp = await fs.promises.realpath(r.mountpoint).catch(() => r.mountpoint);
      await needFscache().umount(mp);
      return {};
    }),
    Status: unary(async (r: w.StatusRequest): Promise<w.StatusResponse> => {
      const status: Record<string, unknown> = {
        pid: process.pid,
        ...d.about,
        fscache: d.supervisor ? 'enabled' : `disabled: ${d.fscacheDisabledReason ?? 'by config'}`,
        backend: d.mounter?.backend ?? null,
      };
      if (d.supervisor) status.worker = { pid: d.supervisor.workerPid ?? null, activations: d.supervisor.activations, ...d.supervisor.health() };
      if (r.brief) return { json: JSON.stringify(status) };
      status.mounts = d.images().all();
      let objects: WorkerObject[] = [];
      if (d.supervisor) {
        try {
          const w = await d.supervisor.status();
          objects = w.objects;
          Object.assign(status.worker as object, w);
        } catch (err) {
          (status.worker as Record<string, unknown>).error = (err as Error).message;
        }
      }
      // Per image: whether it runs lazily, and how much of each of its blobs is
      // already local. Images in one domain share a volume, so the volume alone
      // does not say which objects are the image's: its device table does.
      status.images = d.images().all().map((img) => ({
        fsid: img.fsid,
        mountpoint: img.mountpoint,
        imageRef: img.imageRef,
        lazy: true,
        backend: d.mounter?.backend,
        source: img.imageRef ? 'registry' : 'local',
        blobs: blobsOf(img.domain || img.fsid, img.fsid, d.mounter?.deviceTags(img) ?? null, objects),
      }));
      if (d.snapshots) Object.assign(status, { inventory: inventory(d.snapshots(), d.images().all(), d.mounter?.backend ?? null) });
      if (d.cache) status.cache = await d.cache();
      return { json: JSON.stringify(status) };
    }),
    Trace: unary(async (r: w.TraceRequest): Promise<w.TraceResponse> => {
      if (r.load) {
        if (!d.traces) throw new MountError('this lazysnapd keeps no traces');
        const traces = parseTraces(r.load);
        const stored = traces.filter((t) => d.traces!().add(t));
        d.log.info({ traces: traces.length, stored: stored.length }, 'recorded starts loaded');
        return { json: JSON.stringify(stored) };
      }
      const all = d.traces?.().all() ?? [];
      const want = r.image.trim();
      const hex = want.replace(/^sha256:/, '');
      const picked = want ? all.filter((t) => t.imageRef === want || (/^[0-9a-f]{6,64}$/.test(hex) && t.key.startsWith(hex))) : all;
      if (r.forget) {
        if (!want) throw new MountError('trace --forget needs an image or a trace key');
        for (const t of picked) d.traces!().remove(t.key);
        if (picked.length) d.log.info({ image: want, traces: picked.map((t) => t.key) }, 'recorded starts forgotten');
      }
      return { json: JSON.stringify(picked) };
    }),
  };
}
