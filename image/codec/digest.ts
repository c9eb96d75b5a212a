// Chunk digests: blake3 (nydus's default) or sha256, 32 bytes either way.
// blake3 comes from hash-wasm's WebAssembly build; instantiating it is
// asynchronous, so callers await digestReady() once (DataBlob.open does).
import crypto from 'node:crypto';
import { createBLAKE3, IHasher } from 'hash-wasm';
import { DigestAlgo } from '../rafs/bootstrap';

let blake3: IHasher | undefined;
const ready = createBLAKE3().then((h) => {
  blake3 = h;
});

export function digestReady(): Promise<void> {
  return ready;
}

export function digest(algo: DigestAlgo, data: Uint8Array): Buffer {
  if (algo === DigestAlgo.Sha256) return crypto.createHash('sha256').update(data).digest();
  if (!blake3) throw new Error('blake3 used before digestReady() resolved');
  blake3.init();
  blake3.update(data);
  return Buffer.from(blake3.digest('binary'));
}
