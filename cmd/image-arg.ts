// The image forms `lazysnap inspect` and `mount` take, opened one way: a
// bootstrap file (its blobs beside it, or in --blobs), a converted image in
// an OCI layout (oci:DIR[:TAG], or the layout's path), or one in a registry
// (docker://HOST/REPO[:TAG|@DIGEST]: its blobs are read there).
import fs from 'node:fs';
import path from 'node:path';
import type { BlobSource } from '../image/blob/source';
import { blobsIn } from '../image/inspect/inspect';
import type { BlobEntry } from '../image/rafs/bootstrap';
import { isLayoutRef, openNydusLayout, readNydusBootstrap } from '../image/convert/nydus-layout';
import { Registries, RegistrySource, parseDockerRef } from '../image/convert/docker';
import { RegistryBlobSource } from '../content/remote/source';
import { FileRefused, readFailure, readRegularFile } from '../config/read-file';
import { MAX_BOOTSTRAP_BYTES } from '../mounts/mounter';

/** IMAGE names nothing that can be opened: one line. */
export class ImageArgError extends Error {}

export interface ImageArgOptions {
  /** where the data blobs are (named by blob id), for a bootstrap file or a layout */
  blobs?: string;
  /** docker://: registry credentials, plain http, hosts.toml directory */
  user?: string;
  plainHttp?: boolean;
  hostsDir: string;
  /**
   * A bootstrap file is only named, not read (mount: lazysnapd copies and
   * checks it; an EROFS image given as one can be hundreds of MiB).
   */
  pathOnly?: boolean;
}

export interface OpenedImage {
  bootstrap: Buffer;
  /** the bootstrap file itself, when IMAGE was one (lazysnapd then names it in its messages, and copies it) */
  bootstrapFile?: string;
  /** the blob directory, when the blobs are local */
  blobsDir?: string;
  /** docker://: HOST/REPO:TAG (or @DIGEST), what lazysnapd fetches blobs by */
  imageRef?: string;
  /** a data blob, from blobsDir or the registry; null when it is not there */
  openBlob(entry: BlobEntry): Promise<BlobSource | null>;
  /** where the blobs are, for messages */
  blobsWhere: string;
  close(): Promise<void>;
}

export async function openImageArg(image: string, o: ImageArgOptions): Promise<OpenedImage> {
  const docker = image.startsWith('docker://') ? parseDockerRef(image) : null;
  if (docker) {
    const registries = new Registries({ user: o.user, plainHttp: o.plainHttp, hostsDir: o.hostsDir }, [docker.ref.host]);
    try {
      const img = await readNydusBootstrap(new RegistrySource(docker, registries), image);
      const repo = registries.get().repository(docker.ref.host, docker.ref.repo);
      return {
        bootstrap: img.bootstrap,
        imageRef: `${docker.ref.host}/${docker.ref.repo}${docker.ref.digest ? `@${docker.ref.digest}` : `:${docker.ref.tag ?? 'latest'}`}`,
        openBlob: (e) => RegistryBlobSource.open(repo, `sha256:${e.blobId}`),
        blobsWhere: `${docker.ref.host}/${docker.ref.repo}`,
        close: () => registries.close(),
      };
    } catch (e) {
      await registries.close();
      throw e;
    }
  }
  if (isLayoutRef(image)) {
    const img = await openNydusLayout(image);
    return local(img.bootstrap, o.blobs ? path.resolve(o.blobs) : img.blobsDir);
  }
  let buf: Buffer;
  try {
    if (o.pathOnly) {
      const st = fs.statSync(image);
      if (!st.isFile()) throw new FileRefused('is not a regular file');
      buf = Buffer.alloc(0);
    } else buf = readRegularFile(image, MAX_BOOTSTRAP_BYTES);
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw new ImageArgError(missing
      ? `bootstrap ${image} does not exist (IMAGE is a bootstrap file, oci:DIR[:TAG] or docker://HOST/REPO[:TAG])`
      : `${image} is not a bootstrap file, oci:DIR[:TAG] or docker://HOST/REPO[:TAG]: ${readFailure(e)}`);
  }
  return { ...local(buf, path.resolve(o.blobs ?? path.dirname(image))), bootstrapFile: path.resolve(image) };
}

function local(bootstrap: Buffer, blobsDir: string): OpenedImage {
  return {
    bootstrap,
    blobsDir,
    openBlob: blobsIn(blobsDir),
    blobsWhere: blobsDir,
    close: async () => {},
  };
}
