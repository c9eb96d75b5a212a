// From a learning journal to a trace: each READ's range mapped through the
// bootstrap to the chunks (and files) it touched, first access first, each
// chunk once however often a killed worker's successor recorded it again.
import type { FileChunks } from '../image/rafs/file-chunks';
import type { TraceEntry } from '../snapshotter/storage/traces';
import type { Journal } from '../worker/learn/trace-journal';

/**
 * @param blobIds the image's blob ids by blob index (device i+1 = blob i)
 * READs after the window, or of blobs that are not the image's, do not count.
 */
export function buildTrace(j: Journal, files: FileChunks, blobIds: string[]): TraceEntry[] {
  const out: TraceEntry[] = [];
  const seen = new Set<string>();
  for (const r of j.reads) {
    if (r.t > j.header.untilMs) continue;
    const blobIndex = j.header.tags.indexOf(r.c);
    if (blobIndex < 0 || blobIndex >= blobIds.length) continue;
    for (const c of files.find(blobIndex, r.o, r.l)) {
      const k = `${blobIndex}:${c.uOffset}`;
      if (seen.has(k)) continue;
      seen.add(k);
      out.push({ blob: blobIds[blobIndex], uOffset: c.uOffset, uSize: c.uSize, path: c.path });
    }
  }
  return out;
}
