// Tooling for tests and benchmarks (not used by the daemon): builds a nydus
// data blob in memory without the converter (formats.md §2.4: chunks, then
// chunk infos v2 + header, digests and ToC, each section followed by its tar
// header), with a choice of chunk compressor and digest, and uploads blobs
// to a registry with the distribution push API (monolithic upload).
import crypto from 'node:crypto';
import { request } from 'undici';
import { CI_HEADER_SIZE, CI_MAGIC, ChunkInfo, encodeChunkInfosV2 } from '../../image/blob/chunkinfo';
import { TAR_BLOCK, makeTarHeader } from '../../image/blob/tar';
import { TOC_ENTRY_SIZE, TOC_FLAG_OF, TOC_NAME } from '../../image/blob/toc';
import { compress } from '../../image/codec/decompress';
import { digest as chunkDigest } from '../../image/codec/digest';
import { BlobEntry, BlobFeature, Compressor, DigestAlgo } from '../../image/rafs/bootstrap';

const PAGE = 4096;

export const SYNTHETIC_FEATURES = BlobFeature.ALIGNED | BlobFeature.CHUNK_INFO_V2 | BlobFeature.INLINED_CHUNK_DIGEST |
  BlobFeature.HAS_TAR_HEADER | BlobFeature.HAS_TOC | BlobFeature.CAP_TAR_TOC;

export interface SyntheticBlobOptions {
  /** uncompressed size of each chunk (≤ 16 MiB); their number is the chunk count */
  chunkSizes: number[];
  compressor?: Compressor;
  digester?: DigestAlgo;
  /** fraction (0..1) of each 4 KiB page that is random (the rest repeats): 1 = incompressible. Default 0.5 */
  entropy?: number;
  /** seeds the content; same seed, same blob */
  seed?: string;
  /** zstd level (default 1) */
  level?: number;
}

export interface SyntheticBlob {
  /** the blob file as stored in the registry */
  data: Buffer;
  /** sha256:<hex> of data */
  digest: string;
  /** the bootstrap blob-table entry a converter would write (blobId = hex of digest) */
  entry: BlobEntry;
  /** the blob's uncompressed address space, zero-padded between chunks: what fill() must deliver */
  uncompressed: Buffer;
  chunks: ChunkInfo[];
}

/** Deterministic content: AES-CTR keystream for the random part of each page, a repeating pattern for the rest. */
export function syntheticContent(size: number, seed: string, entropy = 0.5): Buffer {
  const key = crypto.createHash('sha256').update(`key:${seed}`).digest().subarray(0, 16);
  const iv = crypto.createHash('sha256').update(`iv:${seed}`).digest().subarray(0, 16);
  const c = crypto.createCipheriv('aes-128-ctr', key, iv);
  const out = c.update(Buffer.alloc(size));
  const rnd = Math.round(PAGE * Math.min(1, Math.max(0, entropy)));
  if (rnd < PAGE) {
    const pattern = Buffer.from(`lazysnap synthetic ${seed} `.repeat(Math.ceil(PAGE / 20)).slice(0, PAGE));
    for (let p = 0; p < size; p += PAGE) pattern.copy(out, p + rnd, 0, Math.min(PAGE - rnd, size - p - rnd));
  }
  return out;
}

function encodeCiHeader(features: number, ciCompressor: Compressor, entries: number, ciOffset: number, cSize: number, uSize: number): Buffer {
  const b = Buffer.alloc(CI_HEADER_SIZE);
  b.writeUInt32LE(CI_MAGIC, 0);
  b.writeUInt32LE(features >>> 0, 4);
  b.writeUInt32LE(ciCompressor, 8);
  b.writeUInt32LE(entries, 12);
  b.writeBigUInt64LE(BigInt(ciOffset), 16);
  b.writeBigUInt64LE(BigInt(cSize), 24);
  b.writeBigUInt64LE(BigInt(uSize), 32);
  b.writeUInt32LE(CI_MAGIC, CI_HEADER_SIZE - 4);
  return b;
}

function tocEntry(compressor: Compressor, name: string, sha: Buffer, off: number, cSize: number, uSize: number): Buffer {
  const b = Buffer.alloc(TOC_ENTRY_SIZE);
  b.writeUInt32LE(TOC_FLAG_OF[compressor], 0);
  b.write(name, 8, 16, 'latin1');
  sha.copy(b, 24);
  b.writeBigUInt64LE(BigInt(off), 56);
  b.writeBigUInt64LE(BigInt(cSize), 64);
  b.writeBigUInt64LE(BigInt(uSize), 72);
  return b;
}

const sha256 = (...parts: Buffer[]) => {
  const h = crypto.createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

export async function buildSyntheticBlob(opts: SyntheticBlobOptions): Promise<SyntheticBlob> {
  const compressor = opts.compressor ?? Compressor.Zstd;
  const digester = opts.digester ?? DigestAlgo.Blake3;
  const sizes = opts.chunkSizes;
  let uTotal = 0;
  const uOffsets = sizes.map((s) => {
    if (s <= 0 || s > 16 << 20) throw new RangeError(`chunk size ${s}`);
    const o = uTotal;
    uTotal = Math.ceil((o + s) / PAGE) * PAGE;
    return o;
  });
  const content = syntheticContent(uTotal, opts.seed ?? 'lazysnap', opts.entropy ?? 0.5);
  // zero the alignment padding: the uncompressed space has nothing there
  for (let i = 0; i < sizes.length; i++) content.fill(0, uOffsets[i] + sizes[i], i + 1 < sizes.length ? uOffsets[i + 1] : uTotal);
  const parts: Buffer[] = [];
  const chunks: ChunkInfo[] = [];
  const digests: Buffer[] = [];
  let pos = 0;
  for (let i = 0; i < sizes.length; i++) {
    const raw = content.subarray(uOffsets[i], uOffsets[i] + sizes[i]);
    let z = compressor === Compressor.None ? raw : compress(compressor, raw, opts.level ?? 1);
    const compressed = compressor !== Compressor.None && z.length < raw.length;
    if (!compressed) z = raw;
    chunks.push({ index: i, uOffset: uOffsets[i], uSize: sizes[i], cOffset: pos, cSize: z.length, compressed, flags: compressed ? 1 : 0 });
    digests.push(chunkDigest(digester, raw));
    parts.push(z);
    pos += z.length;
  }
  const dataSize = pos;
  const dataSha = sha256(...parts);
  parts.push(makeTarHeader('image.blob', dataSize));
  pos += TAR_BLOCK;
  const ci = encodeChunkInfosV2(chunks);
  const ciZ = compress(Compressor.Zstd, ci);
  const [ciCompressor, ciBytes] = ciZ.length < ci.length ? [Compressor.Zstd, ciZ] : [Compressor.None, ci];
  const ciOffset = pos;
  const ciHeader = encodeCiHeader(SYNTHETIC_FEATURES, ciCompressor, chunks.length, ciOffset, ciBytes.length, ci.length);
  parts.push(ciBytes, ciHeader, makeTarHeader('blob.meta', ciBytes.length + CI_HEADER_SIZE));
  pos += ciBytes.length + CI_HEADER_SIZE + TAR_BLOCK;
  const dig = Buffer.concat(digests);
  const digOffset = pos;
  parts.push(dig, makeTarHeader('blob.digest', dig.length));
  pos += dig.length + TAR_BLOCK;
  const toc = Buffer.concat([
    tocEntry(Compressor.None, 'image.blob', dataSha, dataSize, dataSize, uTotal),
    tocEntry(ciCompressor, 'blob.meta', sha256(ci), ciOffset, ciBytes.length, ci.length),
    tocEntry(Compressor.None, 'blob.meta.header', sha256(ciHeader), ciOffset + ciBytes.length, CI_HEADER_SIZE, CI_HEADER_SIZE),
    tocEntry(Compressor.None, 'blob.digest', sha256(dig), digOffset, dig.length, dig.length),
  ]);
  const tocHdr = makeTarHeader(TOC_NAME, toc.length);
  parts.push(toc, tocHdr);
  const data = Buffer.concat(parts);
  const hex = crypto.createHash('sha256').update(data).digest('hex');
  const entry: BlobEntry = {
    blobId: hex,
    blobIndex: 0,
    chunkSize: 1 << Math.ceil(Math.log2(Math.max(PAGE, ...sizes))),
    chunkCount: chunks.length,
    compressor,
    digester,
    features: SYNTHETIC_FEATURES,
    compressedSize: data.length,
    uncompressedSize: uTotal,
    tocSize: toc.length + TAR_BLOCK,
    ciCompressor,
    ciOffset,
    ciCompressedSize: ciBytes.length,
    ciUncompressedSize: ci.length,
    tocDigest: sha256(toc, tocHdr),
    metaDigest: Buffer.alloc(32),
    metaSize: 0,
    cipherAlgo: 0,
  };
  return { data, digest: `sha256:${hex}`, entry, uncompressed: content, chunks };
}

/**
 * Uploads a blob (POST then a monolithic PUT). `headers` carries
 * authorization if the registry wants it. `dispatcher` for TLS with a test CA.
 */
export async function uploadBlob(baseUrl: string, repo: string, data: Buffer, opts: {
  headers?: Record<string, string>;
  dispatcher?: import('undici').Dispatcher;
} = {}): Promise<string> {
  const digest = `sha256:${crypto.createHash('sha256').update(data).digest('hex')}`;
  const base = baseUrl.replace(/\/+$/, '');
  const h = opts.headers ?? {};
  const start = await request(`${base}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: h, dispatcher: opts.dispatcher });
  await start.body.text();
  if (start.statusCode !== 202) throw new Error(`POST ${repo}/blobs/uploads/: HTTP ${start.statusCode}`);
  const loc = start.headers.location;
  if (typeof loc !== 'string') throw new Error(`POST ${repo}/blobs/uploads/ returned no Location`);
  const put = new URL(loc, base);
  put.searchParams.set('digest', digest);
  const res = await request(put.toString(), {
    method: 'PUT',
    headers: { ...h, 'content-type': 'application/octet-stream', 'content-length': String(data.length) },
    body: data,
    dispatcher: opts.dispatcher,
  });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`PUT blob ${digest} to ${repo}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
  return digest;
}

/** Uploads a manifest (for manifest/index tests). */
export async function uploadManifest(baseUrl: string, repo: string, reference: string, body: Buffer, mediaType: string,
  opts: { headers?: Record<string, string>; dispatcher?: import('undici').Dispatcher } = {}): Promise<string> {
  const res = await request(`${baseUrl.replace(/\/+$/, '')}/v2/${repo}/manifests/${reference}`, {
    method: 'PUT',
    headers: { ...(opts.headers ?? {}), 'content-type': mediaType },
    body,
    dispatcher: opts.dispatcher,
  });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`PUT manifest ${repo}:${reference}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`);
  return `sha256:${crypto.createHash('sha256').update(body).digest('hex')}`;
}
