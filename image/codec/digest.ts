// Chunk digests: blake3 (nydus's default) or sha256, 32 bytes either way.
// blake3 is the addon's (BLAKE3's C implementation with the CPU's SIMD, about
// ten times hash-wasm's WebAssembly); sha256 is Node's OpenSSL.
import crypto from 'node:crypto';
import { blake3 } from '../../native';
import { DigestAlgo } from '../rafs/bootstrap';

export function digest(algo: DigestAlgo, data: Uint8Array): Buffer {
  if (algo === DigestAlgo.Sha256) return crypto.createHash('sha256').update(data).digest();
  return blake3(data);
}
