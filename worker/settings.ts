// What lazysnapd tells a worker it starts: one typed, validated JSON object
// in one environment variable. The control socket (fd 3) is the channel, not
// a setting; nothing else (argv, other variables) configures a worker.

export const SETTINGS_ENV = 'LAZYSNAP_WORKER_SETTINGS';

export interface WorkerSettings {
  /** the kernel interface served: /dev/cachefiles, or a fanotify pre-content group */
  backend: 'fscache' | 'fanotify';
  /** fanotify: where blob files live (<blobDir>/<volume>/<cookie>), and where workers keep their journals ('' for fscache) */
  blobDir: string;
  journalDir: string;
  /** lazysnapd's metadata database, opened read-only */
  dbPath: string;
  /** where the serving worker hands the device fd to a restarted lazysnapd ('' = nowhere) */
  takeoverPath: string;
  logLevel: string;
  /** fetch a remote blob whole, in the background, once the kernel opens it */
  prefetch: boolean;
  /** learned prefetch: where lazysnapd writes journals for the worker to record READs into ('' = no recording), and whether recorded starts are replayed */
  learn: { dir: string; replay: boolean };
  /** where remote blobs' metadata (ToC, chunk infos, digests) is kept, so a worker that takes over opens them without a round trip ('' = not kept) */
  blobMetaDir: string;
  /** every READ is answered within this many ms: data, or EIO for the reader */
  readDeadlineMs: number;
  /** the serving worker sends a heartbeat this often; lazysnapd kills a worker that stays silent (supervisor/liveness.ts) */
  heartbeatMs: number;
  /** the serving worker sends its metrics this often (ms); 0: lazysnapd serves no metrics */
  metricsMs: number;
  /** where lazy blobs are fetched from */
  registry: {
    /** containerd's hosts.toml directory */
    hostsDir: string;
    /** docker's config.json, read at fetch time */
    dockerConfig: string;
    plainHttp: boolean;
    /** where the CRI image proxy keeps pulls' credentials per repository ('' = none) */
    criCredentialsDir: string;
    /** kubelet's credential-provider config and plugin dir ('' = none) */
    credentialProviderConfig: string;
    credentialProviderBinDir: string;
    /** config registry.bad_chunk_cooldown_ms */
    badChunkCooldownMs: number;
  };
}

export class SettingsError extends Error {}

export function encodeSettings(s: WorkerSettings): string {
  return JSON.stringify(s);
}

/** Parses and checks the settings; every field is required, so the two sides cannot drift apart silently. */
export function decodeSettings(text: string | undefined): WorkerSettings {
  if (!text) throw new SettingsError(`${SETTINGS_ENV} is not set (the worker is started by lazysnapd)`);
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new SettingsError(`${SETTINGS_ENV} is not JSON`);
  }
  const o = v as Record<string, unknown>;
  const r = (o?.registry ?? {}) as Record<string, unknown>;
  const want = (ok: boolean, what: string) => {
    if (!ok) throw new SettingsError(`${SETTINGS_ENV}: ${what}`);
  };
  want(typeof o === 'object' && o !== null, 'not an object');
  want(o.backend === 'fscache' || o.backend === 'fanotify', 'backend must be "fscache" or "fanotify"');
  want(typeof o.blobDir === 'string' && typeof o.journalDir === 'string', 'blobDir and journalDir must be strings');
  want(o.backend !== 'fanotify' || ((o.blobDir as string).startsWith('/') && (o.journalDir as string).startsWith('/')),
    'a fanotify worker needs absolute blobDir and journalDir');
  want(typeof o.dbPath === 'string' && o.dbPath.startsWith('/'), 'dbPath must be an absolute path');
  want(typeof o.takeoverPath === 'string', 'takeoverPath must be a string');
  want(typeof o.logLevel === 'string', 'logLevel must be a string');
  want(typeof o.prefetch === 'boolean', 'prefetch must be a boolean');
  want(typeof o.blobMetaDir === 'string' && (o.blobMetaDir === '' || o.blobMetaDir.startsWith('/')), 'blobMetaDir must be an absolute path or ""');
  const l = (o?.learn ?? {}) as Record<string, unknown>;
  want(typeof l.dir === 'string' && (l.dir === '' || l.dir.startsWith('/')) && typeof l.replay === 'boolean',
    'learn must have dir (an absolute path, or "") and replay (boolean)');
  want(Number.isSafeInteger(o.readDeadlineMs) && (o.readDeadlineMs as number) > 0, 'readDeadlineMs must be a positive integer');
  want(Number.isSafeInteger(o.heartbeatMs) && (o.heartbeatMs as number) > 0, 'heartbeatMs must be a positive integer');
  want(Number.isSafeInteger(o.metricsMs) && (o.metricsMs as number) >= 0, 'metricsMs must be a non-negative integer');
  want(typeof r.hostsDir === 'string' && typeof r.dockerConfig === 'string' && typeof r.plainHttp === 'boolean' && typeof r.criCredentialsDir === 'string'
    && typeof r.credentialProviderConfig === 'string' && typeof r.credentialProviderBinDir === 'string'
    && Number.isSafeInteger(r.badChunkCooldownMs) && (r.badChunkCooldownMs as number) > 0,
    'registry must have hostsDir, dockerConfig, criCredentialsDir, credentialProviderConfig, credentialProviderBinDir (strings), plainHttp (boolean) and badChunkCooldownMs (a positive integer)');
  return {
    backend: o.backend as WorkerSettings['backend'],
    blobDir: o.blobDir as string,
    journalDir: o.journalDir as string,
    dbPath: o.dbPath as string,
    takeoverPath: o.takeoverPath as string,
    logLevel: o.logLevel as string,
    prefetch: o.prefetch as boolean,
    learn: { dir: l.dir as string, replay: l.replay as boolean },
    blobMetaDir: o.blobMetaDir as string,
    readDeadlineMs: o.readDeadlineMs as number,
    heartbeatMs: o.heartbeatMs as number,
    metricsMs: o.metricsMs as number,
    registry: { hostsDir: r.hostsDir as string, dockerConfig: r.dockerConfig as string, plainHttp: r.plainHttp as boolean, criCredentialsDir: r.criCredentialsDir as string,
      credentialProviderConfig: r.credentialProviderConfig as string, credentialProviderBinDir: r.credentialProviderBinDir as string,
      badChunkCooldownMs: r.badChunkCooldownMs as number },
  };
}
