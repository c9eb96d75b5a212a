// The version both binaries print (--version) and lazysnapd reports in its
// log, status and metrics: package.json's, which the release artifact keeps
// beside dist/ (dist/cmd/version.js reads ../../package.json).
import fs from 'node:fs';
import path from 'node:path';

function read(): string {
  try {
    const v = (JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

export const VERSION = read();
