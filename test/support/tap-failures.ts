// The failing tests of a TAP stream, each with its YAML block (the error
// and where it was thrown): what a CI report must show when a guest run
// fails, instead of the tail of a log that the failure scrolled away.
export function tapFailures(tap: string, perFailure = 2500): string {
  const lines = tap.split('\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*not ok \d+/.test(lines[i])) continue;
    const block = [lines[i]];
    // The YAML block runs from '---' to '...' at one deeper indent.
    if (/^\s*---\s*$/.test(lines[i + 1] ?? '')) {
      for (let j = i + 1; j < lines.length; j++) {
        block.push(lines[j]);
        if (/^\s*\.\.\.\s*$/.test(lines[j])) break;
      }
    }
    const text = block.join('\n');
    out.push(text.length > perFailure ? `${text.slice(0, perFailure)}\n    [… ${text.length - perFailure} more]` : text);
  }
  return out.join('\n');
}

/** The failures first, then the tail of the output: both fit in a report. */
export function failureReport(tap: string, out: string, tail = 3000): string {
  const f = tapFailures(tap);
  return `${f ? `failing tests:\n${f}\n` : ''}--- last output:\n${out.slice(-tail)}`;
}
