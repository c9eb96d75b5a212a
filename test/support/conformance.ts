// Runs containerd's own snapshotter test suite (../shared/conformance/run.sh)
// against a live socket and parses its closing line.
import path from 'node:path';
import { run } from './proc';
import { sharedDir } from './shared';

export interface ConformanceResult {
  passed: number;
  failed: number;
  skipped: number;
  summary: string;
  output: string;
}

export async function runConformance(socket: string, name = 'lazysnap'): Promise<ConformanceResult> {
  const script = path.join(sharedDir(), 'conformance', 'run.sh');
  // The first run downloads Go and containerd's sources from Debian and builds the runner (~1-2 min).
  const r = await run('bash', [script, socket, name], { timeoutMs: 20 * 60_000 });
  const output = r.stdout + r.stderr;
  const m = /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/m.exec(r.stdout);
  if (!m) throw new Error(`conformance run printed no summary (exit ${r.code}):\n${output.slice(-4000)}`);
  return { passed: +m[1], failed: +m[2], skipped: +(m[3] ?? 0), summary: m[0], output };
}
