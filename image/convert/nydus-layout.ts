// A converted nydus image in an OCI layout: its bootstrap (from the
// bootstrap layer's tar.gz) and the directory holding its blobs, which are
// named by digest, i.e. by blob id. What `lazysnap mount oci:DIR[:TAG]` mounts;
// `lazysnap mount docker://…` reads the bootstrap the same way from a registry.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Bytes } from '../bytes';
import { FormatError } from '../errors';
import { parseTarHeader, TAR_BLOCK } from '../blob/tar';
import { ImageSource, LayoutSource, parseLayoutRef } from './oci';

const BOOTSTRAP_ANNOTATION = 'containerd.io/snapshot/nydus-bootstrap';
const BOOTSTRAP_ENTRY = 'image/image.boot';

export interface NydusLayoutImage {
  bootstrap: Buffer;
  blobsDir: string;
  manifestDigest: string;
}

export function isLayoutRef(s: string): boolean {
  return s.startsWith('oci:') || (fs.existsSync(path.join(s, 'index.json')) && fs.existsSync(path.join(s, 'oci-layout')));
}

export async function openNydusLayout(ref: string): Promise<NydusLayoutImage> {
  const r = parseLayoutRef(ref.startsWith('oci:') ? ref : `oci:${ref}`);
  if (!r) throw new FormatError(ref, 'not an OCI layout reference (oci:DIR[:TAG])');
  const img = await readNydusBootstrap(new LayoutSource(r), ref);
  return { ...img, blobsDir: path.join(r.dir, 'blobs', 'sha256') };
}

/** A bound far above any bootstrap layer, so a wrong layer is refused rather than read whole. */
const MAX_BOOTSTRAP_LAYER = 1 << 30;

/** The bootstrap of a converted image from any source (an OCI layout, a registry). */
export async function readNydusBootstrap(src: ImageSource, name: string): Promise<{ bootstrap: Buffer; manifestDigest: string }> {
  const img = await src.resolve();
  const layer = img.manifest.layers.at(-1);
  if (!layer || layer.annotations?.[BOOTSTRAP_ANNOTATION] !== 'true') {
    throw new FormatError(name, `the image's last layer is not a nydus bootstrap (no ${BOOTSTRAP_ANNOTATION} annotation): convert it first`);
  }
  if (layer.size > MAX_BOOTSTRAP_LAYER) throw new FormatError(name, `bootstrap layer of ${layer.size} bytes`);
  const parts: Buffer[] = [];
  for await (const b of await src.blob(layer)) parts.push(b);
  const tar = zlib.gunzipSync(Buffer.concat(parts));
  const b = new Bytes(tar, `bootstrap layer ${layer.digest}`);
  for (let off = 0; off + TAR_BLOCK <= tar.length; ) {
    if (tar.subarray(off, off + TAR_BLOCK).every((x) => x === 0)) break;
    const h = parseTarHeader(b, off, 'tar header');
    if (h.name === BOOTSTRAP_ENTRY) {
      return { bootstrap: Buffer.from(b.slice(off + TAR_BLOCK, h.size, BOOTSTRAP_ENTRY)), manifestDigest: img.manifestDigest };
    }
    off += TAR_BLOCK + Math.ceil(h.size / TAR_BLOCK) * TAR_BLOCK;
  }
  throw new FormatError(`bootstrap layer ${layer.digest}`, `no ${BOOTSTRAP_ENTRY} entry`);
}
