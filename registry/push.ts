// Pushing to a repository: blob existence (HEAD), cross-repository mounts,
// blob uploads (monolithic or in PATCH chunks) and manifest/index PUTs, all
// through Repository.execute: the hosts with the `push` capability in
// hosts.toml order, retries with backoff, 401 → a new token (push tokens
// are scoped `repository:NAME:pull,push`, cached apart from pull tokens).
//
// Upload retries: an upload is one SessionOp, so any failure (5xx, reset
// mid-body, a lost session) is an attempt and the session runs again. A
// monolithic upload starts over with a new POST. A chunked one first asks
// the registry how far the old session got (GET on its Location → 204 with
// Range) and resumes there; when the registry has no usable answer
// (distribution drops a session whose last PATCH was cut off) it starts over.
// Bodies are made anew for every send, from a file range or a Buffer.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Readable, Transform, pipeline } from 'node:stream';
import { pullScope, pushScope } from './auth';
import { HttpStep, Repository, expectOk, isDigest } from './client';
import { IntegrityError, ProtocolError, RegistryErrorInfo } from './errors';
import { HttpResponse, RequestBody, discard, errorText, headerValue } from './http';
import type { RegistryHost } from './hosts';

export const DEFAULT_UPLOAD_CHUNK = 16 << 20;
export const DEFAULT_MONOLITHIC_MAX = 64 << 20;

export interface UploadOptions {
  /** blobs up to this size go up in one PUT, larger ones in PATCH chunks (default 64 MiB) */
  monolithicMax?: number;
  /** PATCH size of chunked uploads (default 16 MiB) */
  chunkSize?: number;
}

/** A blob to upload: its digest, size and a way to read any byte range again (retries re-send). */
export interface UploadSource {
  digest: string;
  size: number;
  /** bytes [off, off+len) as a fresh body */
  read(off: number, len: number): RequestBody;
}

export function fileUpload(path: string, digest: string, size: number): UploadSource {
  return {
    digest,
    size,
    read: (off, len) => (len === 0 ? Buffer.alloc(0) : fs.createReadStream(path, { start: off, end: off + len - 1, highWaterMark: 1 << 20 })),
  };
}

export function bufferUpload(data: Buffer, digest = sha256(data)): UploadSource {
  return { digest, size: data.length, read: (off, len) => data.subarray(off, off + len) };
}

export type PushOutcome = 'exists' | 'mounted' | 'uploaded';

export interface PushBlobOptions extends UploadOptions {
  /** repositories of the same registry to try a cross-repository mount from, in order */
  mountFrom?: string[];
  /** bytes of this blob sent so far (goes back down when an upload starts over) */
  onProgress?(bytes: number): void;
  signal?: AbortSignal;
}

export interface PushStats {
  mounts: number;
  uploads: number;
  /** upload sessions resumed after a failure */
  resumed: number;
  /** upload sessions started over after a failure */
  restarted: number;
}

// ---- pure helpers

export interface ChunkRange {
  start: number;
  /** inclusive, as Content-Range has it */
  end: number;
}

/** PATCH ranges covering [from, size) in chunkSize pieces. */
export function planChunks(size: number, chunkSize: number, from = 0): ChunkRange[] {
  if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0) throw new RangeError(`bad upload chunk size ${chunkSize}`);
  const out: ChunkRange[] = [];
  for (let s = from; s < size; s += chunkSize) out.push({ start: s, end: Math.min(size, s + chunkSize) - 1 });
  return out;
}

/** The distribution spec's Content-Range for a PATCH: "start-end", no unit. */
export function contentRange(c: ChunkRange): string {
  return `${c.start}-${c.end}`;
}

export function uploadMode(size: number, o: UploadOptions = {}): 'monolithic' | 'chunked' {
  return size > (o.monolithicMax ?? DEFAULT_MONOLITHIC_MAX) ? 'chunked' : 'monolithic';
}

/**
 * An upload URL from a Location header (absolute, or relative to the host's
 * origin), with extra query parameters added to the ones the registry put
 * there (distribution's _state must survive).
 */
export function uploadUrl(location: string, base: string, params: Record<string, string> = {}): string {
  const u = new URL(location, base);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`upload Location is a ${u.protocol} URL`);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.href;
}

/**
 * The next byte an upload session wants, from its Range header ("0-N" → N+1).
 * "0-0" is undefined: distribution says that for both 0 and 1 bytes received.
 */
export function uploadOffset(range: string | undefined): number | undefined {
  const m = /^(?:bytes=)?0-(\d+)$/.exec((range ?? '').trim());
  if (!m) return undefined;
  const end = Number(m[1]);
  return end > 0 && Number.isSafeInteger(end) ? end + 1 : undefined;
}

function sha256(b: Buffer): string {
  return 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');
}

/** Reports the bytes of a stream body as the sender takes them (base: where the body starts in the blob). */
function counted(body: RequestBody, base: number, onBytes?: (n: number) => void): RequestBody {
  if (!onBytes || !(body instanceof Readable)) return body;
  let n = base;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes((n += chunk.length));
      cb(null, chunk);
    },
  });
  // an error or an early destroy on either side closes the file too
  pipeline(body, t, () => undefined);
  return t;
}

// ---- pushing

interface SessionState {
  origin?: string;
  location?: string;
}

/** A registry error while a session is under way: the session may be gone, so it is retried (resume or start over). */
async function sessionLost(res: HttpResponse, info: RegistryErrorInfo): Promise<never> {
  if (res.status === 400 || res.status === 404 || res.status === 416) {
    const body = (await errorText(res)).replace(/\s+/g, ' ').trim().slice(0, 200);
    throw new ProtocolError(`upload session failed: HTTP ${res.status}${body ? `: ${body}` : ''}`, { ...info, status: res.status }, true);
  }
  await expectOk(res, [], info);
  throw new Error('unreachable');
}

export class Pusher {
  readonly stats: PushStats = { mounts: 0, uploads: 0, resumed: 0, restarted: 0 };
  private readonly scopes: string[];

  constructor(readonly repo: Repository, readonly opts: UploadOptions = {}) {
    this.scopes = [pushScope(repo.repo)];
  }

  /** Whether the repository has the blob (HEAD, asked of the push hosts). */
  async hasBlob(digest: string, signal?: AbortSignal): Promise<boolean> {
    return this.repo.execute({
      what: `blob ${digest} (HEAD)`,
      path: `/blobs/${digest}`,
      capability: 'push',
      method: 'HEAD',
      scopes: this.scopes,
      signal,
      handle: async (res, info) => {
        discard(res);
        if (res.status === 404) return false;
        await expectOk(res, [200], info);
        return true;
      },
    });
  }

  /**
   * HEAD, then a mount from each of mountFrom, then an upload. The last
   * mount's 202 (the registry opened an upload instead) is used for the upload.
   */
  async pushBlob(src: UploadSource, o: PushBlobOptions = {}): Promise<PushOutcome> {
    if (await this.hasBlob(src.digest, o.signal)) return 'exists';
    const from = (o.mountFrom ?? []).filter((r) => r !== this.repo.repo);
    for (const f of from.slice(0, -1)) if (await this.mountOnly(src.digest, f, o.signal)) return 'mounted';
    return this.upload(src, { ...o, mountFrom: from.slice(-1) });
  }

  /** A mount attempt whose fallback session is cancelled (a later candidate or the upload opens its own). */
  private async mountOnly(digest: string, from: string, signal?: AbortSignal): Promise<boolean> {
    return this.repo.execute({
      what: `blob ${digest} (mount from ${from})`,
      capability: 'push',
      signal,
      run: async (host, step) => {
        const r = await this.start(host, step, digest, from, signal);
        if (r.mounted) return true;
        await this.cancel(step, r.location);
        return false;
      },
    });
  }

  /** Opens an upload session (POST), or mounts the blob when `from` has it (201). */
  private async start(host: RegistryHost, step: <U>(s: HttpStep<U>) => Promise<U>, digest: string, from: string | undefined,
    signal?: AbortSignal): Promise<{ mounted: true } | { mounted: false; location: string }> {
    const query = from ? `?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}` : '';
    return step({
      what: from ? `blob ${digest} (mount from ${from})` : `blob ${digest} (upload start)`,
      path: `/blobs/uploads/${query}`,
      method: 'POST',
      scopes: from ? [...this.scopes, pullScope(from)] : this.scopes,
      signal,
      handle: async (res, info) => {
        if (from && res.status === 201) {
          discard(res);
          const got = headerValue(res.headers, 'docker-content-digest');
          if (got && isDigest(got) && got !== digest) throw new IntegrityError(`mounted as ${got}`, info);
          this.stats.mounts++;
          return { mounted: true as const };
        }
        await expectOk(res, [202], info);
        discard(res);
        const loc = headerValue(res.headers, 'location');
        if (!loc) throw new ProtocolError('upload session without a Location', { ...info, status: res.status }, true);
        return { mounted: false as const, location: uploadUrl(loc, host.origin) };
      },
    });
  }

  /** Best effort: a session we will not use is deleted rather than left for the registry's purge. */
  private async cancel(step: <U>(s: HttpStep<U>) => Promise<U>, location: string): Promise<void> {
    await step({
      what: 'upload cancel',
      url: location,
      method: 'DELETE',
      scopes: this.scopes,
      handle: async (res) => discard(res),
    }).catch(() => undefined);
  }

  /** Uploads a blob (mounting it instead if mountFrom[0] has it). */
  async upload(src: UploadSource, o: PushBlobOptions = {}): Promise<PushOutcome> {
    const opts = { ...this.opts, ...o };
    const mode = uploadMode(src.size, opts);
    const chunk = opts.chunkSize ?? DEFAULT_UPLOAD_CHUNK;
    const from = o.mountFrom?.[0];
    const state: SessionState = {};
    let attempts = 0;
    return this.repo.execute<PushOutcome>({
      what: `blob ${src.digest} (upload)`,
      capability: 'push',
      signal: o.signal,
      run: async (host, step) => {
        let location: string | undefined;
        let offset = 0;
        if (attempts++ > 0) {
          if (mode === 'chunked' && state.location && state.origin === host.origin) {
            const prev = state.location;
            state.location = undefined;
            const r = await this.status(step, prev, src.digest, o.signal);
            if (r) {
              ({ location, offset } = r);
              this.stats.resumed++;
            }
          }
          if (!location) this.stats.restarted++;
        }
        if (!location) {
          const s = await this.start(host, step, src.digest, from, o.signal);
          if (s.mounted) return 'mounted';
          location = s.location;
        }
        state.origin = host.origin;
        state.location = location;
        o.onProgress?.(offset);
        if (mode === 'monolithic') {
          await this.put(step, location, src, { off: 0, len: src.size }, o);
        } else {
          for (const c of planChunks(src.size, chunk, offset)) {
            location = await this.patch(step, location, src, c, o);
            state.location = location;
          }
          await this.put(step, location, src, { off: src.size, len: 0 }, o);
        }
        state.location = undefined;
        this.stats.uploads++;
        o.onProgress?.(src.size);
        return 'uploaded';
      },
    });
  }

  /** Where an interrupted session stands (GET → 204 with Range), or undefined to start over. */
  private async status(step: <U>(s: HttpStep<U>) => Promise<U>, location: string, digest: string, signal?: AbortSignal):
    Promise<{ location: string; offset: number } | undefined> {
    return step({
      what: `blob ${digest} (upload status)`,
      url: location,
      method: 'GET',
      scopes: this.scopes,
      signal,
      handle: async (res) => {
        discard(res);
        if (res.status !== 204) return undefined;
        const offset = uploadOffset(headerValue(res.headers, 'range'));
        if (offset === undefined) return undefined;
        const loc = headerValue(res.headers, 'location');
        return { location: loc ? uploadUrl(loc, location) : location, offset };
      },
    }).catch(() => undefined);
  }

  private async patch(step: <U>(s: HttpStep<U>) => Promise<U>, location: string, src: UploadSource, c: ChunkRange,
    o: PushBlobOptions): Promise<string> {
    const len = c.end - c.start + 1;
    return step({
      what: `blob ${src.digest} (upload bytes ${contentRange(c)})`,
      url: location,
      method: 'PATCH',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(len), 'content-range': contentRange(c) },
      body: () => counted(src.read(c.start, len), c.start, o.onProgress),
      scopes: this.scopes,
      signal: o.signal,
      handle: async (res, info) => {
        if (res.status !== 202) return sessionLost(res, info);
        discard(res);
        const range = headerValue(res.headers, 'range');
        const next = uploadOffset(range);
        if (range !== undefined && next !== c.end + 1) {
          throw new ProtocolError(`after bytes ${contentRange(c)} the registry has Range "${range}"`, { ...info, status: 202 }, true);
        }
        const loc = headerValue(res.headers, 'location');
        return loc ? uploadUrl(loc, location) : location;
      },
    });
  }

  /** The closing PUT ?digest=: with [off, off+len) as its body (the whole blob, or nothing after PATCHes). */
  private async put(step: <U>(s: HttpStep<U>) => Promise<U>, location: string, src: UploadSource,
    part: { off: number; len: number }, o: PushBlobOptions): Promise<void> {
    await step({
      what: `blob ${src.digest} (upload${part.len ? '' : ' commit'})`,
      url: uploadUrl(location, location, { digest: src.digest }),
      method: 'PUT',
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(part.len) },
      body: () => counted(src.read(part.off, part.len), part.off, o.onProgress),
      scopes: this.scopes,
      signal: o.signal,
      handle: async (res, info) => {
        if (res.status !== 201) return sessionLost(res, info);
        discard(res);
        const got = headerValue(res.headers, 'docker-content-digest');
        if (got && isDigest(got) && got !== src.digest) throw new IntegrityError(`the registry stored the upload as ${got}`, info);
      },
    });
  }

  /**
   * PUTs a manifest or an index under a tag or its digest; returns its
   * digest (checked against the registry's Docker-Content-Digest).
   */
  async putManifest(reference: string, mediaType: string, body: Buffer, signal?: AbortSignal): Promise<string> {
    const digest = sha256(body);
    if (isDigest(reference) && reference !== digest) throw new Error(`manifest has digest ${digest}, not ${reference}`);
    return this.repo.execute({
      what: `manifest ${reference} (PUT)`,
      path: `/manifests/${reference}`,
      capability: 'push',
      method: 'PUT',
      headers: { 'content-type': mediaType, 'content-length': String(body.length) },
      body: () => body,
      scopes: this.scopes,
      signal,
      handle: async (res, info) => {
        await expectOk(res, [201], info);
        discard(res);
        const got = headerValue(res.headers, 'docker-content-digest');
        if (got && isDigest(got) && got !== digest) throw new IntegrityError(`the registry stored the manifest as ${got}, not ${digest}`, info);
        return digest;
      },
    });
  }
}
