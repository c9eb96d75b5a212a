// curl downloading a URL to /dev/null: the baseline the fetch benchmarks set
// lazysnap beside (no decoding, no cache file, one GET).
import { runOk } from '../test/support/proc';

/** One GET of url by curl: its own total time and the bytes it received. */
export async function curlDownload(url: string): Promise<{ seconds: number; bytes: number }> {
  const r = await runOk('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{time_total} %{size_download}', url], { timeoutMs: 600_000 });
  const [seconds, bytes] = r.stdout.trim().split(' ').map(Number);
  return { seconds, bytes };
}
