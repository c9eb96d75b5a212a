// `lazysnap optimize SRC DST [-- CMD...]`: runs the image once, records the
// files its start opens, and converts it to DST with them as its prefetch
// table (image/optimize/optimize.ts).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { recordStart } from '../image/optimize/optimize';
import { WorkloadError } from '../image/optimize/workload';
import { ConvertCliOptions, convertCommand, convertOptionsOf, isInputError } from './convert';

export interface OptimizeCliOptions extends ConvertCliOptions {
  timeout: string;
  traceOut?: string;
}

export async function optimizeCommand(src: string, dst: string, command: string[], o: OptimizeCliOptions): Promise<number> {
  const fail = (m: string) => (process.stderr.write(`lazysnap optimize: ${m}\n`), 1);
  const timeoutMs = Math.round(Number(o.timeout) * 1000);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) return fail(`--timeout must be a number of seconds above 0, got "${o.timeout}"`);
  let rec;
  try {
    rec = await recordStart(src, { ...convertOptionsOf(o), command, timeoutMs, say: (l) => process.stderr.write(`optimize: ${l}\n`) });
  } catch (e) {
    if (!(e instanceof WorkloadError) && !isInputError(e)) throw e;
    return fail((e as Error).message);
  }
  const how = rec.exitCode === null ? `stopped after ${o.timeout} s` : typeof rec.exitCode === 'string' ? `killed by ${rec.exitCode}` : `exited with ${rec.exitCode}`;
  process.stderr.write(`optimize: the start opened ${rec.paths.length} files of the image (${how}, ${rec.ms} ms)\n`);
  if (rec.exitCode !== null && rec.exitCode !== 0) process.stderr.write('warning: the workload failed; its trace may not be the start you want\n');
  if (rec.overflowed) process.stderr.write('warning: open events were dropped; the trace may miss files\n');
  if (rec.paths.length === 0) return fail('the workload opened no file of the image: nothing to prefetch');
  const tmp = o.traceOut ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'lazysnap-optimize-trace-'));
  const list = o.traceOut ?? path.join(tmp!, 'prefetch.txt');
  try {
    fs.writeFileSync(list, rec.paths.join('\n') + '\n');
    return await convertCommand(src, dst, { ...o, prefetchTrace: list });
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
