// A reader in its own process (dist/test/kernel/failover-reader.js): reads
// every file of a mounted tree once and compares it with its source.
import path from 'node:path';
import { spawn } from 'node:child_process';

export const READER_JS = path.resolve(__dirname, '../kernel/failover-reader.js');

export interface ReadResult {
  files: number;
  bytes: number;
  readsFailed: number;
  mismatchedBytes: number;
  errors: string[];
}

export function startReader(mnt: string, src: string): Promise<ReadResult> {
  const p = spawn(process.execPath, [READER_JS, mnt, src], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout!.on('data', (x) => (out += x));
  return new Promise((resolve, reject) =>
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as ReadResult) : reject(new Error(`reader exited ${code}`)))),
  );
}
