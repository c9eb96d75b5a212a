// A nydus image of a local directory, as lazysnap's converter makes it: the
// directory is tarred (tar(1), uncompressed) into an OCI layout, which
// `lazysnap convert` turns into a nydus layout. Returns the ref to mount.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { runOk } from './proc';
import { writeLayout } from './oci-layout';

const CLI = path.resolve(__dirname, '../../cmd/lazysnap.js');

/** The directory as an OCI layout with one uncompressed layer; the ref of its image. */
export async function ociFromDir(src: string, oci: string): Promise<string> {
  const tar = spawn('tar', ['--sort=name', '--numeric-owner', '-C', src, '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const done = new Promise<void>((resolve, reject) => tar.on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`tar exited ${c}`)))));
  await writeLayout(oci, [{ stream: tar.stdout, mediaType: 'application/vnd.oci.image.layer.v1.tar' }]);
  await done;
  return `oci:${oci}:latest`;
}

export async function nydusFromDir(src: string, work: string): Promise<string> {
  const out = path.join(work, 'nydus');
  await runOk(process.execPath, [CLI, 'convert', await ociFromDir(src, path.join(work, 'oci')), `oci:${out}:nydus`], { timeoutMs: 900_000 });
  return `oci:${out}:nydus`;
}
