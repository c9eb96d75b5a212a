// Where blobs of images pulled through containerd come from: their registry,
// through one fetcher per process (a worker, or lazysnapd when it downloads
// blobs whole because no lazy backend serves).
import type { Logger } from 'pino';
import { BlobFetcher, BlobMetaCache, dockerConfigCredentials, parseImageRef, type ClientStats } from '../content/remote';
import type { RemoteBlobOpener } from './resolver';
import fs from 'node:fs';
import { loadCriCredentials } from '../registry/cri-credentials';
import { CredentialProviders, parseProviderConfig } from '../registry/credential-provider';
import type { WorkerSettings } from './settings';

export interface RemoteOpener {
  open: RemoteBlobOpener;
  holdPrefetch(ms: number): void;
  /** the registry client's counters (none before the first remote blob) */
  registryStats(): ClientStats | undefined;
}

export function remoteOpener(s: Pick<WorkerSettings, 'registry' | 'readDeadlineMs' | 'blobMetaDir'>, log: Logger): RemoteOpener {
  let fetcher: BlobFetcher | undefined;
  const reg = s.registry;
  const holdPrefetch = (ms: number) => fetcher?.scheduler.holdPrefetch(ms);
  let providers: CredentialProviders | null | undefined;
  const open: RemoteBlobOpener = async (img, entry, tableDigests) => {
    // read once, when a remote blob is first opened; a bad file is refused at lazysnapd's start already
    providers ??= reg.credentialProviderConfig
      ? new CredentialProviders(parseProviderConfig(fs.readFileSync(reg.credentialProviderConfig, 'utf8'), reg.credentialProviderConfig), reg.credentialProviderBinDir)
      : null;
    fetcher ??= new BlobFetcher({
      registry: {
        hostsDir: reg.hostsDir || undefined,
        plainHttp: reg.plainHttp,
        credentials: dockerConfigCredentials({ path: reg.dockerConfig }),
        // A GET that stalls is given up after a third of the READ's deadline, so a retry still fits in it.
        timeouts: { headersMs: stallMs(s.readDeadlineMs), bodyMs: stallMs(s.readDeadlineMs) },
        log,
      },
      metaCache: s.blobMetaDir ? new BlobMetaCache(s.blobMetaDir) : undefined,
      chunks: { badChunkCooldownMs: reg.badChunkCooldownMs },
      log,
    });
    const ref = parseImageRef(img.imageRef);
    // a private image pulled through the CRI proxy: its pull's credentials; else kubelet's credential
    // providers; else the node's own (docker config.json, the client's default)
    const credentials = loadCriCredentials(reg.criCredentialsDir, ref.host, ref.repo)
      ?? (await providers?.credentialsFor(`${ref.host}/${ref.repo}`).catch((err) => {
        log.warn({ image: `${ref.host}/${ref.repo}`, err: (err as Error).message }, "the credential provider failed; reading with the node's own credentials");
        return undefined;
      }));
    return fetcher.open({ host: ref.host, repo: ref.repo, entry, tableDigests, credentials });
  };
  return { open, holdPrefetch, registryStats: () => fetcher?.client.stats };
}

/** How long a registry response may stay silent before its GET is retried. */
const stallMs = (deadlineMs: number) => Math.max(1000, Math.floor(deadlineMs / 3));
