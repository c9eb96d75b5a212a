// When an image's bootstrap layer is committed (the end of its pull),
// lazysnapd reads its blobs' metadata (size, ToC, chunk infos, digests) into
// the blob metadata cache (content/remote/meta-cache.ts). Under CRI the pod
// sandbox starts before the container; by the container's first read its
// worker opens each blob from local disk instead of waiting a round trip to
// the registry (which the container's creation otherwise waits for: containerd
// reads /etc/passwd before CreateContainer returns). Best effort: a blob not
// read here is read by the worker, as before.
import fs from 'node:fs';
import type { Logger } from 'pino';
import { Bootstrap } from '../image/rafs/bootstrap';
import type { BlobMetaCache } from '../content/remote/meta-cache';
import type { RemoteBlobOpener } from '../worker/resolver';

export type MetaAtPull = (bootstrapFile: string, imageRef: string) => Promise<void>;

export function blobMetaAtPull(open: RemoteBlobOpener, cache: BlobMetaCache, log: Logger): MetaAtPull {
  const reading = new Set<string>();
  return async (bootstrapFile, imageRef) => {
    let bs: Bootstrap;
    try {
      bs = new Bootstrap(fs.readFileSync(bootstrapFile), bootstrapFile);
    } catch (err) {
      log.warn({ bootstrap: bootstrapFile, err: (err as Error).message }, 'cannot parse a pulled bootstrap; its blobs are opened at their first read');
      return;
    }
    await Promise.all(bs.blobs.map(async (entry, i) => {
      if (reading.has(entry.blobId) || cache.has(entry.blobId)) return;
      reading.add(entry.blobId);
      const t0 = Date.now();
      try {
        await open({ imageRef }, entry, bs.chunkTableDigests(i));
        log.debug({ image: imageRef, blob: entry.blobId, ms: Date.now() - t0 }, 'blob metadata read at pull');
      } catch (err) {
        log.warn({ image: imageRef, blob: entry.blobId, err: (err as Error).message }, 'cannot read a blob\'s metadata at pull; its first read will');
      } finally {
        reading.delete(entry.blobId);
      }
    }));
  };
}
