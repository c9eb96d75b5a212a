// lazysnap status: which blobs are an image's, in a volume shared by several;
// and through the handler, the whole document (which asks the serving worker
// and measures the cache) against the brief one (a probe's: neither, so it
// answers while the worker is stopped or busy).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { adminHandlers, blobsOf, type WorkerObject } from '../../admin/service';
import type { FscacheSupervisor } from '../../supervisor/supervisor';
import type { FscacheImages } from '../../snapshotter/storage/images';

const obj = (volume: string, cookie: string, present?: number): WorkerObject => ({
  volume, cookie, size: 100, ...(present === undefined ? {} : { present: { bytes: 100, bytesPresent: present, fetchedBytes: present / 2 } }),
});

test('an image lists its own blobs in device-table order, open or not; other images\' blobs and its bootstrap are left out', () => {
  const objects = [obj('dom', 'fsid-a'), obj('dom', 'b2', 40), obj('dom', 'other', 100), obj('elsewhere', 'b1', 100)];
  assert.deepEqual(blobsOf('dom', 'fsid-a', ['b1', 'b2'], objects), [
    { blob: 'b1', open: false, bytes: null, bytesPresent: null, fetchedBytes: null },
    { blob: 'b2', open: true, bytes: 100, bytesPresent: 40, fetchedBytes: 20 },
  ]);
  // a bootstrap whose device table cannot be read: what the worker has open in the volume
  assert.deepEqual(blobsOf('dom', 'fsid-a', null, objects).map((b) => b.blob), ['b2', 'other']);
  // a local (flat) blob has no presence: its size, present unknown
  assert.deepEqual(blobsOf('v', 'f', ['x'], [obj('v', 'x')]), [{ blob: 'x', open: true, bytes: 100, bytesPresent: null, fetchedBytes: null }]);
});

function handlers() {
  const asked = { worker: 0, cache: 0 };
  const supervisor = {
    workerPid: 4242,
    activations: 3,
    health: () => ({ standby: 'loaded', hangsHealed: 1, lastFailoverStallMs: 80 }),
    // a stopped worker: never answers
    status: () => {
      asked.worker++;
      return new Promise(() => {});
    },
  } as unknown as FscacheSupervisor;
  const h = adminHandlers({
    supervisor,
    images: () => ({ all: () => [] }) as unknown as FscacheImages,
    mountDirs: [],
    about: { version: 't', config: 'c', root: '/r', address: '/a' },
    cache: async () => {
      asked.cache++;
      return { dir: '/c', usage: 1, maxBytes: 0, lowWaterBytes: 0, evictions: 0 };
    },
    log: pino({ level: 'silent' }),
  });
  const status = (brief: boolean) =>
    new Promise<Record<string, unknown>>((resolve, reject) =>
      (h.Status as Function)({ request: { brief } }, (err: grpc.ServiceError | null, res: { json: string }) => (err ? reject(err) : resolve(JSON.parse(res.json)))),
    );
  return { status, asked };
}

test('brief status: lazysnapd and the worker\'s health, without asking the worker or measuring the cache', async () => {
  const { status, asked } = handlers();
  const s = await status(true);
  assert.deepEqual(s.worker, { pid: 4242, activations: 3, standby: 'loaded', hangsHealed: 1, lastFailoverStallMs: 80 });
  assert.equal(s.version, 't');
  assert.equal(s.fscache, 'enabled');
  for (const k of ['mounts', 'images', 'cache', 'inventory']) assert.ok(!(k in s), `no ${k} in a brief status`);
  assert.deepEqual(asked, { worker: 0, cache: 0 });
});

test('the whole status asks the worker (and waits for it)', async () => {
  const { status, asked } = handlers();
  const pending = status(false);
  const settled = await Promise.race([pending.then(() => 'answered'), new Promise((r) => setTimeout(() => r('waiting'), 200))]);
  assert.equal(settled, 'waiting', 'it waits on the stopped worker');
  assert.equal(asked.worker, 1);
});
