// Summaries the benchmarks print.

/** The middle value (the upper one of the two middles for an even count). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The p-th percentile by nearest rank: the smallest value that p% of the values are at or under (of 100 values,
 * p99 is the 99th smallest, the one under the largest).
 */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length, Math.max(1, Math.ceil((p / 100) * s.length))) - 1] : 0;
}
