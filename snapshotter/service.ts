// The gRPC face of the snapshotter: containerd.services.snapshots.v1.Snapshots.
// Translates wire types, and turns thrown errors into the status codes that
// containerd's errdefs maps back.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type * as w from '../proto/types';
import { codeOf } from './storage/errors';
import { Info } from './storage/info';
import { Snapshotter } from './snapshotter';

const LIST_BATCH = 100;

function toTimestamp(us: number): w.Timestamp {
  return { seconds: String(Math.floor(us / 1e6)), nanos: (us % 1e6) * 1000 };
}

function fromTimestamp(t: w.Timestamp | null): number {
  return t ? Number(t.seconds) * 1e6 + Math.floor(t.nanos / 1000) : 0;
}

export function toWire(i: Info): w.WireInfo {
  return {
    name: i.name,
    parent: i.parent,
    kind: i.kind,
    created_at: toTimestamp(i.createdUs),
    updated_at: toTimestamp(i.updatedUs),
    labels: i.labels,
  };
}

export function fromWire(i: w.WireInfo): Info {
  return {
    name: i.name,
    parent: i.parent,
    kind: i.kind,
    createdUs: fromTimestamp(i.created_at),
    updatedUs: fromTimestamp(i.updated_at),
    labels: i.labels ?? {},
  };
}

type Unary<Req, Res> = (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void;

export function snapshotsHandlers(sn: Snapshotter, log: Logger): grpc.UntypedServiceImplementation {
  // Every unary method goes through here: one log line per failure, with the code.
  const unary =
    <Req, Res>(method: string, fn: (req: Req) => Res | Promise<Res>): Unary<Req, Res> =>
    (call, cb) => {
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (res) => cb(null, res),
          (err: Error) => {
            const code = codeOf(err);
            const level = code === grpc.status.UNKNOWN ? 'error' : 'debug';
            log[level]({ method, code: grpc.status[code], err: err.message }, 'request failed');
            cb({ code, details: err.message });
          },
        );
    };

  return {
    Prepare: unary('Prepare', async (r: w.PrepareSnapshotRequest) => ({ mounts: await sn.prepare(r.key, r.parent, r.labels ?? {}) })),
    View: unary('View', async (r: w.ViewSnapshotRequest) => ({ mounts: await sn.view(r.key, r.parent, r.labels ?? {}) })),
    Mounts: unary('Mounts', async (r: w.KeyRequest) => ({ mounts: await sn.mounts(r.key) })),
    Commit: unary('Commit', async (r: w.CommitSnapshotRequest) => {
      await sn.commit(r.name, r.key, r.labels ?? {});
      return {};
    }),
    Remove: unary('Remove', async (r: w.KeyRequest) => {
      await sn.remove(r.key);
      return {};
    }),
    Stat: unary('Stat', (r: w.KeyRequest) => ({ info: toWire(sn.stat(r.key)) })),
    Update: unary('Update', (r: w.UpdateSnapshotRequest) => {
      const info = fromWire(r.info ?? ({ name: '' } as w.WireInfo));
      return { info: toWire(sn.update(info, r.update_mask?.paths ?? [])) };
    }),
    List: (call: grpc.ServerWritableStream<w.ListSnapshotsRequest, w.ListSnapshotsResponse>) => {
      try {
        const infos = sn.list(call.request.filters ?? []);
        for (let i = 0; i < infos.length; i += LIST_BATCH) {
          call.write({ info: infos.slice(i, i + LIST_BATCH).map(toWire) });
        }
        call.end();
      } catch (err) {
        const code = codeOf(err);
        log.debug({ method: 'List', code: grpc.status[code], err: (err as Error).message }, 'request failed');
        // grpc-js ends a server stream with a status when 'error' is emitted on it.
        call.emit('error', { code, details: (err as Error).message });
      }
    },
    Usage: unary('Usage', async (r: w.KeyRequest) => {
      const u = await sn.usage(r.key);
      return { size: String(u.size), inodes: String(u.inodes) };
    }),
    Cleanup: unary('Cleanup', async () => {
      await sn.cleanup();
      return {};
    }),
  };
}
