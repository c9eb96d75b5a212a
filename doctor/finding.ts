// One line of `lazysnap doctor`: what was checked, how it came out, and
// what to do about it. lazysnapd logs the same findings at start.

export type Verdict = 'ok' | 'warn' | 'fail';

export interface Finding {
  /** "area: what", e.g. "kernel: fanotify pre-content events" */
  check: string;
  verdict: Verdict;
  /** what was seen */
  detail: string;
  /** the fix, for warn and fail */
  fix?: string;
}

export const ok = (check: string, detail: string): Finding => ({ check, verdict: 'ok', detail });
export const warn = (check: string, detail: string, fix?: string): Finding => ({ check, verdict: 'warn', detail, ...(fix ? { fix } : {}) });
export const fail = (check: string, detail: string, fix?: string): Finding => ({ check, verdict: 'fail', detail, ...(fix ? { fix } : {}) });

/** The text report: one line per finding, its fix indented below it. */
export function formatFindings(findings: Finding[]): string {
  return findings
    .map((f) => `${f.verdict === 'ok' ? 'ok  ' : f.verdict === 'warn' ? 'WARN' : 'FAIL'}  ${f.check}: ${f.detail}${f.fix ? `\n      fix: ${f.fix}` : ''}`)
    .join('\n') + '\n';
}
