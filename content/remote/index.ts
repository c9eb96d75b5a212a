// fetcher/: lazy chunk fetching from OCI registries. The entry point for the
// fscache worker is BlobFetcher: one per process (it holds the connection
// pool, token and redirect caches and the per-host scheduler), then
// `open({host, repo, entry, credentials})` per data blob.
import type { Logger } from 'pino';
import type { BlobEntry } from '../../image/rafs/bootstrap';
import { ChunkFetcherOptions, RemoteBlobContent } from './chunk-fetcher';
import { CredentialSource, Credentials, credentialKey, normalizeHost } from '../../registry/docker-config';
import { RegistryClient, RegistryClientOptions, Repository } from '../../registry/client';
import { FetchScheduler, SchedulerOptions } from './scheduler';
import type { BlobMetaCache } from './meta-cache';

export { RemoteBlobContent } from './chunk-fetcher';
export { BadChunkError } from './bad-chunks';
export type { ChunkFetcherOptions, ChunkFetcherStats } from './chunk-fetcher';
export type { BlobProgress } from './presence';
export { Prefetch } from './prefetch';
export type { PrefetchOptions, PrefetchResult } from './prefetch';
export { RegistryBlobSource, rangeReaderOf } from './source';
export { BlobMetaCache } from './meta-cache';
export type { RangeReader } from './source';
export { FetchScheduler, Priority } from './scheduler';
export { RegistryClient, Repository } from '../../registry/client';
export type { RegistryClientOptions, ResolvedManifest, ClientStats } from '../../registry/client';
export {
  dockerConfigCredentials, staticCredentials, chainCredentials, defaultDockerConfigPath,
} from '../../registry/docker-config';
export type { Credentials, CredentialSource } from '../../registry/docker-config';
export { parseImageRef, DEFAULT_PLATFORM, MediaType } from '../../registry/manifest';
export type { ImageRef, Platform, Descriptor, ImageManifest, ImageIndex } from '../../registry/manifest';
export * from '../../registry/errors';

export interface BlobFetcherOptions {
  /** a client to share, or options for a new one */
  registry?: RegistryClient | RegistryClientOptions;
  scheduler?: SchedulerOptions;
  /** defaults for every blob (amplify, maxMerge, …) */
  chunks?: Omit<ChunkFetcherOptions, 'scheduler' | 'hostKey' | 'presence'>;
  /** where blobs' metadata is kept locally (meta-cache.ts); none: every open reads it from the registry */
  metaCache?: BlobMetaCache;
  log?: Logger;
}

export interface OpenBlobRequest {
  /** registry host[:port] of the image ("127.0.0.1:5001", "docker.io") */
  host: string;
  /** repository ("test/busybox", "library/busybox") */
  repo: string;
  /** the bootstrap's blob table entry for this blob */
  entry: BlobEntry;
  /** defaults to sha256:<entry.blobId> */
  digest?: string;
  /** compressed blob size if known (a layer descriptor's size); else HEAD asks */
  size?: number;
  /** Bootstrap.chunkTableDigests(i), for blobs without a blob.digest section */
  tableDigests?: Buffer[] | null;
  /** credentials for `host` (mirrors use the client's source); overrides the client's for `host` */
  credentials?: Credentials;
  options?: Omit<ChunkFetcherOptions, 'scheduler' | 'hostKey'>;
  signal?: AbortSignal;
}

export class BlobFetcher {
  readonly client: RegistryClient;
  readonly scheduler: FetchScheduler;
  private readonly ownClient: boolean;
  private readonly repos = new Map<string, Repository>();
  private readonly sources = new Map<string, CredentialSource>();

  constructor(readonly opts: BlobFetcherOptions = {}) {
    if (opts.registry instanceof RegistryClient) {
      this.client = opts.registry;
      this.ownClient = false;
    } else {
      this.client = new RegistryClient({ log: opts.log, ...opts.registry });
      this.ownClient = true;
    }
    this.scheduler = new FetchScheduler(opts.scheduler);
  }

  /** The repository, with `credentials` used for its own host (cached per host, repo and credential). */
  repository(host: string, repo: string, credentials?: Credentials): Repository {
    const ck = credentialKey(credentials);
    const key = `${host}|${repo}|${ck}`;
    let r = this.repos.get(key);
    if (!r) {
      r = this.client.repository(host, repo, credentials ? { credentials: this.sourceFor(host, credentials, ck) } : {});
      this.repos.set(key, r);
    }
    return r;
  }

  private sourceFor(host: string, creds: Credentials, ck: string): CredentialSource {
    const key = `${host}|${ck}`;
    let s = this.sources.get(key);
    if (!s) {
      const want = normalizeHost(host);
      const fallback = this.client.opts.credentials;
      s = async (h: string) => (normalizeHost(h) === want ? creds : fallback?.(h));
      this.sources.set(key, s);
    }
    return s;
  }

  /** Opens a remote nydus data blob as BlobContent (loads its ToC, chunk infos and digests). */
  async open(req: OpenBlobRequest): Promise<RemoteBlobContent> {
    const repo = this.repository(req.host, req.repo, req.credentials);
    return RemoteBlobContent.open(repo, req.entry, {
      log: this.opts.log,
      ...this.opts.chunks,
      ...req.options,
      digest: req.digest,
      size: req.size,
      tableDigests: req.tableDigests,
      signal: req.signal,
      metaCache: this.opts.metaCache,
      scheduler: this.scheduler,
      hostKey: req.host,
    });
  }

  async close(): Promise<void> {
    if (this.ownClient) await this.client.close();
  }
}
