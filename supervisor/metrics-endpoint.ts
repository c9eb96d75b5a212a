// The Prometheus endpoint: GET /metrics on "host:port" or a unix socket
// ([metrics] address). Read-only; anything else is 404/405.
import fs from 'node:fs';
import http from 'node:http';
import { parseListenAddress } from '../config/config';
import type { DaemonMetrics } from './metrics';

export class MetricsEndpointError extends Error {}

export async function serveMetrics(address: string, metrics: DaemonMetrics): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return void res.writeHead(404).end('not found: GET /metrics\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return void res.writeHead(405, { allow: 'GET, HEAD' }).end();
    metrics.render().then(
      ({ contentType, body }) => res.writeHead(200, { 'content-type': contentType }).end(req.method === 'HEAD' ? undefined : body),
      (err: Error) => res.writeHead(500).end(`${err.message}\n`),
    );
  });
  server.keepAliveTimeout = 65_000;
  const unix = address.startsWith('/');
  // a socket file left by a killed lazysnapd (the root lock says none is running)
  if (unix) fs.rmSync(address, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new MetricsEndpointError(`metrics address ${address}: ${err.code === 'EADDRINUSE' ? 'already in use' : err.message}`)));
    if (unix) server.listen(address, resolve);
    else {
      const a = parseListenAddress(address)!;
      server.listen(a.port, a.host, resolve);
    }
  });
  if (unix) fs.chmodSync(address, 0o600);
  return server;
}
