// Chunk digests: blake3 (nydus's default) or sha256, 32 bytes either way.
import crypto from 'node:crypto';
import { blake3 } from '@napi-rs/blake-hash';
import { DigestAlgo } from '../rafs/bootstrap';

export function digest(algo: DigestAlgo, data: Uint8Array): Buffer {
  return algo === DigestAlgo.Blake3 ? blake3(data) : crypto.createHash('sha256').update(data).digest();
}
