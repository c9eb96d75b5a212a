// A nydus data blob served in its uncompressed address space: the chunks
// covering a range are read, decompressed straight into the aligned buffer
// and digest-checked (DataBlob), and gaps between chunks are zeros.
import type { DataBlob } from '../image/blob/datablob';
import { Allocator, BlobContent, PAGE, RangeSink, alignUp, fillWindow } from './content';

export class NydusBlobContent implements BlobContent {
  readonly size: number;
  readonly name: string;

  constructor(readonly blob: DataBlob) {
    this.size = blob.entry.uncompressedSize;
    this.name = blob.name;
  }

  async fill(off: number, len: number, sink: RangeSink, alloc: Allocator, signal?: AbortSignal): Promise<void> {
    const w = fillWindow(off, len, this.size);
    if (!w) return;
    const chunks = this.blob.chunksFor(w.start, w.end - w.start);
    // Whole chunks are written even where they stick out of the window: the
    // kernel would ask for the rest soon, and it costs no extra fetch.
    const start = Math.min(w.start, ...chunks.map((c) => c.uOffset));
    const end = Math.max(w.end, ...chunks.map((c) => Math.min(alignUp(c.uOffset + c.uSize), alignUp(this.size))));
    const region = alloc(end - start);
    for (const c of chunks) {
      signal?.throwIfAborted();
      const at = c.uOffset - start;
      const dst = region.subarray(at, at + c.uSize);
      const data = await this.blob.readChunk(c, dst);
      if (data.buffer !== region.buffer || data.byteOffset !== dst.byteOffset) data.copy(dst);
    }
    if (start % PAGE || region.length % PAGE) throw new Error(`internal: unaligned region [${start}, ${end})`);
    await sink(start, region);
  }

  close(): void {
    this.blob.src.close().catch(() => undefined);
  }
}
