// Worker thread body for CompressorPool: zstd-compresses each chunk of a
// batch and returns the results with the chunks (transferred, not copied).
import { parentPort, workerData } from 'node:worker_threads';
import * as zstd from 'zstd-napi';

const cctx = new zstd.Compressor();
cctx.setParameters({ compressionLevel: (workerData as { level: number }).level });
const whole = (u: Uint8Array) => u.byteOffset === 0 && u.byteLength === u.buffer.byteLength;

parentPort!.on('message', (m: { data: Uint8Array[] }) => {
  const keep = m.data.filter(whole).map((d) => d.buffer as ArrayBuffer);
  try {
    const out = m.data.map((d) => {
      const z = cctx.compress(d);
      return whole(z) ? z : Buffer.from(z);
    });
    parentPort!.postMessage({ out, data: m.data }, [...out.map((z) => z.buffer as ArrayBuffer), ...keep]);
  } catch (e) {
    parentPort!.postMessage({ out: [], data: m.data, error: (e as Error).message }, keep);
  }
});
