// What `lazysnap inspect` reports about a bootstrap and, with --verify, its blobs.
import fs from 'node:fs';
import path from 'node:path';
import { FormatError } from '../errors';
import { DataBlob } from '../blob/datablob';
import { FileSource, type BlobSource } from '../blob/source';
import { NULL_ADDR } from '../erofs/image';
import { DataLayout, S_IFMT, isLnk } from '../erofs/inode';
import { Bootstrap, BlobFeature, Compressor, DigestAlgo, RafsFlags, type BlobEntry } from '../rafs/bootstrap';

export interface TreeEntry {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  nlink: number;
  link?: string;
  hardlinkOf?: string;
  rdev?: number;
  xattrs?: Record<string, string>;
  /** chunk-based files: [device id, block address] per chunk (-1 for holes) */
  chunks?: [number, number][];
}

export interface VerifyReport {
  chunks: number;
  verified: number;
  failed: number;
  failures: string[];
  missingBlobs: string[];
}

export interface InspectReport {
  bootstrap: string;
  superblock: Record<string, number | string>;
  rafs: { flags: string[]; chunkSize: number; prefetchInodes: number };
  blobs: {
    index: number;
    blobId: string;
    tag: string;
    chunks: number;
    chunkSize: number;
    compressedSize: number;
    uncompressedSize: number;
    compressor: string;
    digester: string;
    features: string[];
    deviceBlocks: number;
  }[];
  tree: TreeEntry[];
  verify?: VerifyReport;
}

const flagNames = (v: number, table: Record<string, number>) =>
  Object.entries(table)
    .filter(([, bit]) => (v & bit) !== 0)
    .map(([n]) => n.toLowerCase());

export function describeBootstrap(file: string, buf: Buffer): InspectReport {
  const bs = new Bootstrap(buf, `bootstrap ${file}`);
  const img = bs.erofs;
  const sb = img.sb;
  const tree: TreeEntry[] = [];
  for (const e of img.walk()) {
    const i = e.inode;
    const t: TreeEntry = { path: e.path, mode: i.mode, uid: i.uid, gid: i.gid, size: i.size, mtime: i.mtime, nlink: i.nlink };
    if (e.hardlinkOf) t.hardlinkOf = e.hardlinkOf;
    else {
      if (isLnk(i)) t.link = img.readlink(i);
      const ft = i.mode & S_IFMT;
      if (ft === 0o020000 || ft === 0o060000) t.rdev = i.iu;
      const x = img.xattrs(i);
      if (x.length) t.xattrs = Object.fromEntries(x.map((a) => [a.name, a.value.toString('base64')]));
      if (i.layout === DataLayout.ChunkBased) {
        t.chunks = img.chunkMap(i).chunks.map((c) => [c.deviceId, c.blkaddr === NULL_ADDR ? -1 : c.blkaddr]);
      }
    }
    tree.push(t);
  }
  return {
    bootstrap: file,
    superblock: {
      blockSize: img.blksz,
      blocks: sb.blocks,
      inodes: sb.inos,
      rootNid: sb.rootNid,
      metaBlkaddr: sb.metaBlkaddr,
      featureCompat: `0x${sb.featureCompat.toString(16)}`,
      featureIncompat: `0x${sb.featureIncompat.toString(16)}`,
      checksum: sb.featureCompat & 1 ? `0x${sb.checksum.toString(16)}` : 'none',
      extraDevices: sb.extraDevices,
      buildTime: sb.buildTime,
    },
    rafs: { flags: flagNames(bs.ext.flags, RafsFlags), chunkSize: bs.ext.chunkSize, prefetchInodes: bs.prefetch.length },
    blobs: bs.blobs.map((b, i) => ({
      index: i,
      blobId: b.blobId,
      tag: bs.devices[i].tag,
      chunks: b.chunkCount,
      chunkSize: b.chunkSize,
      compressedSize: b.compressedSize,
      uncompressedSize: b.uncompressedSize,
      compressor: Compressor[b.compressor],
      digester: DigestAlgo[b.digester],
      features: flagNames(b.features, BlobFeature),
      deviceBlocks: bs.devices[i].blocks,
    })),
    tree,
  };
}

/** Reads, decompresses and checks the digest of every chunk of every blob found in dir. */
/** Blobs as files named by blob id in `dir`: a converted layout's blobs/sha256, or a bootstrap's own directory. */
export function blobsIn(dir: string): (entry: BlobEntry) => Promise<BlobSource | null> {
  return async (e) => {
    const file = path.join(dir, e.blobId);
    return fs.existsSync(file) ? FileSource.open(file, `blob ${e.blobId}`) : null;
  };
}

/** Reads and checks every chunk of every blob; `open` gives a blob's bytes (a file, the registry), or null when it is not there. */
export async function verifyBlobs(buf: Buffer, open: (entry: BlobEntry) => Promise<BlobSource | null>, onProgress?: (done: number, total: number) => void): Promise<VerifyReport> {
  const bs = new Bootstrap(buf);
  const r: VerifyReport = { chunks: 0, verified: 0, failed: 0, failures: [], missingBlobs: [] };
  const total = bs.blobs.reduce((n, b) => n + b.chunkCount, 0);
  for (const entry of bs.blobs) {
    const src = await open(entry);
    if (!src) {
      r.missingBlobs.push(entry.blobId);
      continue;
    }
    try {
      let blob: DataBlob;
      try {
        blob = await DataBlob.open(entry, src, bs.chunkTableDigests(entry.blobIndex));
      } catch (e) {
        r.chunks += entry.chunkCount;
        r.failed += entry.chunkCount;
        r.failures.push((e as Error).message);
        continue;
      }
      for (const c of blob.chunks) {
        r.chunks++;
        try {
          await blob.readChunk(c);
          r.verified++;
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
          r.failed++;
          r.failures.push(e.message);
        }
        onProgress?.(r.chunks, total);
      }
    } finally {
      await src.close();
    }
  }
  return r;
}
