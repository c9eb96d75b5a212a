// An HTTP proxy in front of a registry (127.0.0.1) that forwards everything
// and, when a rule matches, injects a fault instead: an error status, a
// connection reset in the middle of the body, a stall, a body shorter than
// asked for, a flipped byte, a redirect to another origin, no answer. It logs every
// request (method, path, Range, status, whether Authorization was sent), so
// tests can count what reached the registry.
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type Fault =
  /** answer with this status (and headers/body) instead of forwarding */
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** destroy the connection before answering */
  | { kind: 'reset' }
  /** send headers and `afterBytes` of the body (default: half), then destroy the connection */
  | { kind: 'reset-mid-body'; afterBytes?: number }
  /** send `afterBytes` (default: half), go silent for `ms`, then destroy the connection */
  | { kind: 'stall'; afterBytes?: number; ms: number }
  /** a consistent but short answer: Content-Length and body cut to `keepBytes` (default: half), Content-Range untouched */
  | { kind: 'truncate'; keepBytes?: number }
  /** flip one bit of the body at `at` (default: the middle) */
  | { kind: 'flip'; at?: number }
  /** forward without the Range header (the registry answers 200 with the whole blob) */
  | { kind: 'ignore-range' }
  /** forward `afterBytes` of the request body (default: half of its Content-Length), then destroy both connections */
  | { kind: 'reset-mid-request'; afterBytes?: number }
  /** hold the request for `ms` (its body unread), then forward it untouched (e.g. until a token has expired) */
  | { kind: 'delay'; ms: number }
  /** 307 (or `status`) to the same path and query on another origin, with extra query parameters */
  | { kind: 'redirect'; to: string; status?: number; query?: Record<string, string> }
  /** never answer: the request hangs until the client gives up (LogEntry.closedAt says when) */
  | { kind: 'hang' };

export interface RequestInfo {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
}

export interface FaultRule {
  match?: (r: RequestInfo) => boolean;
  /** the fault, or a function choosing one per request */
  fault: Fault | ((r: RequestInfo) => Fault);
  /** how many requests it applies to (default 1; Infinity for all) */
  times?: number;
}

export interface LogEntry {
  method: string;
  path: string;
  range?: string;
  status: number;
  fault?: Fault['kind'];
  authorization: boolean;
  at: number;
  /** a hung request: when the client closed its connection */
  closedAt?: number;
}

export interface FaultProxyOptions {
  /** headers added to every upstream request (e.g. credentials, for a "signed URL" blob store) */
  upstreamHeaders?: Record<string, string>;
  /** drop the client's Authorization instead of forwarding it */
  stripAuthorization?: boolean;
  /** forward the client's Host header, so the registry's Locations (upload sessions) point back at the proxy */
  keepHost?: boolean;
}

/** blob upload requests: POST (start or mount), PATCH (chunk), PUT (?digest=) */
export const isUpload = (r: RequestInfo) => r.path.includes('/blobs/uploads/');
export const isUploadBody = (r: RequestInfo) => isUpload(r) && (r.method === 'PATCH' || r.method === 'PUT') &&
  Number(r.headers['content-length'] ?? 0) > 0;

/** GET …/blobs/… requests */
export const isBlobGet = (r: RequestInfo) => r.method === 'GET' && r.path.includes('/blobs/sha256:');
export const isRangedBlobGet = (r: RequestInfo) => isBlobGet(r) && r.headers.range !== undefined;

export class FaultProxy {
  readonly log: LogEntry[] = [];
  private rules: FaultRule[] = [];
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: http.Server, readonly upstream: URL, readonly port: number,
    private readonly opts: FaultProxyOptions) {}

  /** Starts a proxy on 127.0.0.1 forwarding to upstream (http://127.0.0.1:PORT). */
  static async start(upstream: string, opts: FaultProxyOptions = {}): Promise<FaultProxy> {
    let self: FaultProxy | undefined;
    const server = http.createServer((req, res) => self!.handle(req, res));
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    self = new FaultProxy(server, new URL(upstream), (server.address() as AddressInfo).port, opts);
    server.on('connection', (s: Socket) => {
      self!.sockets.add(s);
      s.on('close', () => self!.sockets.delete(s));
    });
    return self;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  inject(rule: FaultRule): void {
    this.rules.push({ times: 1, ...rule });
  }

  clear(): void {
    this.rules = [];
  }

  /** rules with uses left */
  get pending(): number {
    return this.rules.filter((r) => (r.times ?? 1) > 0).length;
  }

  entries(pred: (e: LogEntry) => boolean = () => true): LogEntry[] {
    return this.log.filter(pred);
  }

  private take(info: RequestInfo): Fault | undefined {
    for (const r of this.rules) {
      if ((r.times ?? 1) <= 0) continue;
      if (r.match && !r.match(info)) continue;
      r.times = (r.times ?? 1) - 1;
      return typeof r.fault === 'function' ? r.fault(info) : r.fault;
    }
    return undefined;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const info: RequestInfo = { method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers };
    const fault = this.take(info);
    const entry: LogEntry = {
      method: info.method,
      path: info.path,
      range: typeof req.headers.range === 'string' ? req.headers.range : undefined,
      status: 0,
      fault: fault?.kind,
      authorization: req.headers.authorization !== undefined,
      at: Date.now(),
    };
    this.log.push(entry);
    if (fault?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'hang') {
      req.resume();
      res.once('close', () => (entry.closedAt = Date.now()));
      return;
    }
    if (fault?.kind === 'status') {
      entry.status = fault.status;
      req.resume();
      res.writeHead(fault.status, { 'content-type': 'text/plain', ...fault.headers }).end(fault.body ?? `injected ${fault.status}`);
      return;
    }
    if (fault?.kind === 'redirect') {
      const target = new URL(info.path, fault.to);
      for (const [k, v] of Object.entries(fault.query ?? {})) target.searchParams.set(k, v);
      entry.status = fault.status ?? 307;
      req.resume();
      res.writeHead(entry.status, { location: target.toString(), 'content-length': '0' }).end();
      return;
    }
    if (fault?.kind === 'delay') {
      req.pause();
      const t = setTimeout(() => this.forward(req, res, info, entry, undefined), fault.ms);
      req.socket.once('close', () => clearTimeout(t));
      return;
    }
    this.forward(req, res, info, entry, fault);
  }

  private forward(req: http.IncomingMessage, res: http.ServerResponse, info: RequestInfo, entry: LogEntry, fault: Fault | undefined): void {
    const headers: http.OutgoingHttpHeaders = { ...req.headers, host: this.opts.keepHost ? req.headers.host : this.upstream.host, ...this.opts.upstreamHeaders };
    if (this.opts.stripAuthorization) delete headers.authorization;
    if (fault?.kind === 'ignore-range') delete headers.range;
    if (this.opts.upstreamHeaders?.authorization) headers.authorization = this.opts.upstreamHeaders.authorization;
    const up = http.request({
      host: this.upstream.hostname,
      port: this.upstream.port,
      method: req.method,
      path: info.path,
      headers,
      agent: this.agent,
    }, (ur) => this.respond(ur, res, req, entry, fault));
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end('upstream error');
      else res.destroy();
    });
    if (fault?.kind === 'reset-mid-request') {
      const cut = fault.afterBytes ?? Math.floor(Number(req.headers['content-length'] ?? 0) / 2);
      let sent = 0;
      req.on('data', (chunk: Buffer) => {
        if (sent >= cut) return;
        const part = chunk.subarray(0, cut - sent);
        sent += part.length;
        up.write(part);
        if (sent >= cut) {
          // the registry sees a body cut short, the client a dead connection
          up.destroy();
          req.socket.destroy();
        }
      });
      req.on('end', () => up.end());
      return;
    }
    req.pipe(up);
  }

  private respond(ur: http.IncomingMessage, res: http.ServerResponse, req: http.IncomingMessage, entry: LogEntry,
    fault: Fault | undefined): void {
    entry.status = ur.statusCode ?? 502;
    const headers = { ...ur.headers };
    const length = Number(headers['content-length'] ?? NaN);
    const bodyFault = fault && (fault.kind === 'reset-mid-body' || fault.kind === 'stall' || fault.kind === 'truncate' || fault.kind === 'flip');
    if (!bodyFault || !(length > 0)) {
      res.writeHead(entry.status, headers);
      ur.pipe(res);
      return;
    }
    const half = Math.floor(length / 2);
    let cut = length;
    if (fault.kind === 'truncate') {
      cut = Math.min(length - 1, fault.keepBytes ?? half);
      headers['content-length'] = String(cut);
    } else if (fault.kind === 'reset-mid-body' || fault.kind === 'stall') {
      cut = Math.min(length - 1, fault.afterBytes ?? half);
    }
    const flipAt = fault.kind === 'flip' ? Math.min(length - 1, fault.at ?? half) : -1;
    res.writeHead(entry.status, headers);
    let pos = 0;
    let stopped = false;
    ur.on('data', (chunk: Buffer) => {
      if (stopped) return;
      if (flipAt >= pos && flipAt < pos + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[flipAt - pos] ^= 0x10;
      }
      if (pos + chunk.length >= cut && cut < length) {
        const part = chunk.subarray(0, cut - pos);
        stopped = true;
        ur.destroy();
        const finish = () => {
          if (fault.kind === 'truncate') res.end();
          else if (fault.kind === 'stall') {
            const t = setTimeout(() => res.socket?.destroy(), fault.ms);
            res.socket?.once('close', () => clearTimeout(t));
          } else res.socket?.destroy();
        };
        if (part.length) res.write(part, finish);
        else finish();
        return;
      }
      pos += chunk.length;
      res.write(chunk);
    });
    ur.on('end', () => {
      if (!stopped) res.end();
    });
    req.on('close', () => ur.destroy());
  }

  async stop(): Promise<void> {
    this.agent.destroy();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
