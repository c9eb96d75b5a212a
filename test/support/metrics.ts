// Scrapes lazysnapd's Prometheus endpoint (TCP "host:port" or a unix socket)
// and reads samples out of the text exposition.
import http from 'node:http';

export type Samples = Map<string, number>;

export function scrape(address: string): Promise<Samples> {
  const target = address.startsWith('/') ? { socketPath: address } : { host: address.split(':')[0], port: Number(address.split(':')[1]) };
  return new Promise((resolve, reject) => {
    http.get({ ...target, path: '/metrics', timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(parseExposition(body)) : reject(new Error(`GET /metrics: HTTP ${res.statusCode}: ${body.slice(0, 200)}`))));
    }).on('error', reject);
  });
}

/** "name{labels} value" lines by their name-and-labels text, exactly as printed. */
export function parseExposition(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** The sum of every sample of `name` whose labels include all of `labels`. */
export function total(s: Samples, name: string, labels: Record<string, string> = {}): number {
  let n = 0;
  for (const [k, v] of s) {
    const brace = k.indexOf('{');
    if ((brace < 0 ? k : k.slice(0, brace)) !== name) continue;
    if (Object.entries(labels).every(([l, want]) => k.includes(`${l}="${want}"`))) n += v;
  }
  return n;
}
