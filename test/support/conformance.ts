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

export interface ConformanceOptions {
  /** whose suite: bookworm (1.6.20, default), trixie (1.7.24) or sid (2.1.9) */
  suite?: 'bookworm' | 'trixie' | 'sid';
  /** the name SnapshotterSuite is given, when not the one sent in requests (see run.sh's README on Rename) */
  suiteName?: string;
}

export async function runConformance(socket: string, name = 'lazysnap', o: ConformanceOptions = {}): Promise<ConformanceResult> {
  const script = path.join(sharedDir(), 'conformance', 'run.sh');
  const env: NodeJS.ProcessEnv = { ...process.env, CONFORMANCE_SUITE: o.suite ?? 'bookworm' };
  if (o.suiteName) env.SNAPSHOTTER_SUITE_NAME = o.suiteName;
  // Nothing else runs beside it (one test file at a time): compile on both cores.
  env.CONFORMANCE_BUILD_P ??= '2';
  // The first run downloads Go and containerd's sources from Debian and builds
  // the runner (bookworm ~1-2 min; sid ~375 MB and ~8 min).
  const r = await run('bash', [script, socket, name], { timeoutMs: 25 * 60_000, env });
  const output = r.stdout + r.stderr;
  const m = /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/m.exec(r.stdout);
  if (!m) throw new Error(`conformance run printed no summary (exit ${r.code}):\n${output.slice(-4000)}`);
  return { passed: +m[1], failed: +m[2], skipped: +(m[3] ?? 0), summary: m[0], output };
}
