// The gRPC face of the snapshotter: containerd.services.snapshots.v1.Snapshots.
// Translates wire types, and turns thrown errors into the status codes that
// containerd's errdefs maps back.
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type * as w from '../proto/types';
import { codeOf, detailsOf } from './storage/errors';
import { Info } from './storage/info';
import { filterView, matches, parseFilters, usesRegex } from './filters';
import { FilterPool } from './filter-pool';
import { Snapshotter } from './snapshotter';

/** Infos per List message, as containerd's own snapshots service sends them. */
export const LIST_BATCH = 100;
/**
 * And at most this many bytes per message (unless one info alone is more):
 * far below the 4 MiB a gRPC client accepts by default (containerd's proxy
 * client: 16 MiB). 100 snapshots with 168 KB of labels each were one 16.8 MB
 * message, which no client could take.
 */
export const LIST_BATCH_BYTES = 1 << 20;
/** List hands the event loop back after this long, so a large List never holds other clients up. */
const LIST_SLICE_MS = 10;
/** Snapshots matched at a time (by a filter worker, when the filter has a regular expression). */
const MATCH_CHUNK = 64;

/**
 * An upper bound on the bytes an info takes in a ListSnapshotsResponse:
 * field tags and 5-byte length varints (the most a 32-bit length takes),
 * 10-byte timestamps, and per label its map entry's framing (at most 18).
 */
export function wireInfoBytes(i: Info): number {
  let n = 64 + Buffer.byteLength(i.name) + Buffer.byteLength(i.parent);
  for (const [k, v] of Object.entries(i.labels)) n += 20 + Buffer.byteLength(k) + Buffer.byteLength(v);
  return n;
}

/** Groups infos into List messages of at most maxCount infos and maxBytes (by wireInfoBytes). */
export class ListBatcher {
  private batch: Info[] = [];
  private bytes = 0;
  constructor(
    private readonly maxCount = LIST_BATCH,
    private readonly maxBytes = LIST_BATCH_BYTES,
  ) {}

  /** Adds an info; returns the batch it closed, if adding it closed one. */
  add(info: Info): Info[] | null {
    const n = wireInfoBytes(info);
    let full: Info[] | null = null;
    if (this.batch.length > 0 && (this.batch.length >= this.maxCount || this.bytes + n > this.maxBytes)) full = this.flush();
    this.batch.push(info);
    this.bytes += n;
    return full;
  }

  /** The last, partial batch (null when empty). */
  flush(): Info[] | null {
    if (this.batch.length === 0) return null;
    const b = this.batch;
    this.batch = [];
    this.bytes = 0;
    return b;
  }
}

type ListCall = grpc.ServerWritableStream<w.ListSnapshotsRequest, w.ListSnapshotsResponse>;

/** Resolves when the stream takes more messages, or when nobody is reading any more. */
function writable(call: ListCall): Promise<void> {
  return new Promise((resolve) => {
    if (call.cancelled || call.destroyed) return resolve(); // those events are gone by
    const done = () => {
      for (const e of ['drain', 'cancelled', 'close', 'error']) call.off(e, done);
      resolve();
    };
    for (const e of ['drain', 'cancelled', 'close', 'error']) call.on(e, done);
  });
}

/**
 * Reads and filters a chunk at a time, handing the event loop back between
 * chunks, and streams batches under the message limit. Regular expressions
 * are matched in a worker thread. The filter is parsed (and refused) before
 * anything is sent; a cancelled call stops the work, in the worker too.
 */
async function streamList(sn: Snapshotter, call: ListCall, pool: FilterPool): Promise<void> {
  const filters = call.request.filters ?? [];
  const filter = parseFilters(filters);
  const offLoop = usesRegex(filter);
  const batcher = new ListBatcher();
  const abort = new AbortController();
  const onCancel = () => abort.abort();
  call.on('cancelled', onCancel);
  try {
    const send = async (batch: Info[] | null) => {
      if (batch && !call.write({ info: batch.map(toWire) })) await writable(call);
    };
    let chunk: Info[] = [];
    const flush = async () => {
      const keep = offLoop
        ? await pool.match(filters, chunk.map((i) => filterView(filter, i)), abort.signal)
        : chunk.map((i) => matches(filter, i));
      for (let k = 0; k < chunk.length; k++) if (keep[k]) await send(batcher.add(chunk[k]));
      chunk = [];
    };
    let slice = performance.now();
    for (const info of sn.walk()) {
      chunk.push(info);
      if (chunk.length < MATCH_CHUNK && performance.now() - slice < LIST_SLICE_MS) continue;
      await flush();
      if (performance.now() - slice >= LIST_SLICE_MS) {
        await new Promise(setImmediate);
        slice = performance.now();
      }
      if (call.cancelled) return;
    }
    await flush();
    await send(batcher.flush());
    if (!call.cancelled) call.end();
  } finally {
    call.off('cancelled', onCancel);
  }
}

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

/** Told of each unary call's duration (ms) and failure code (null: it succeeded), for metrics. */
export type CallObserver = (method: string, ms: number, code: string | null) => void;

export function snapshotsHandlers(sn: Snapshotter, log: Logger, observe?: CallObserver): grpc.UntypedServiceImplementation {
  const filterPool = new FilterPool();
  // Every unary method goes through here: one log line per failure, with the code.
  const unary =
    <Req, Res>(method: string, fn: (req: Req) => Res | Promise<Res>): Unary<Req, Res> =>
    (call, cb) => {
      const t0 = performance.now();
      Promise.resolve()
        .then(() => fn(call.request))
        .then(
          (res) => {
            observe?.(method, performance.now() - t0, null);
            cb(null, res);
          },
          (err: Error) => {
            const code = codeOf(err);
            const level = code === grpc.status.UNKNOWN ? 'error' : 'debug';
            const details = detailsOf(err);
            log[level]({ method, code: grpc.status[code], err: details }, 'request failed');
            observe?.(method, performance.now() - t0, grpc.status[code]);
            cb({ code, details });
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
    List: (call: ListCall) => {
      streamList(sn, call, filterPool).catch((err) => {
        if (call.cancelled) return; // nobody is listening, and the work has stopped
        const code = codeOf(err);
        const details = detailsOf(err);
        log[code === grpc.status.UNKNOWN ? 'error' : 'debug']({ method: 'List', code: grpc.status[code], err: details }, 'request failed');
        // grpc-js ends a server stream with a status when 'error' is emitted on it.
        call.emit('error', { code, details });
      });
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
