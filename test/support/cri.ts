// A small promise client of the Kubernetes CRI (runtime.v1) as containerd's
// CRI plugin serves it, from our own trimmed proto (cri/api.proto): what a
// kubelet (or crictl) does to pull an image and run a container, without
// either of them being installable here.
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// ------------------------------------------------------------ wire types
// As @grpc/proto-loader hands them over with keepCase, longs: String,
// enums: String, defaults: true. Requests may leave fields out.

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';
export type ContainerState = 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';

export interface NamespaceOption { network?: NamespaceMode; pid?: NamespaceMode; ipc?: NamespaceMode; target_id?: string }

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  /** Absolute; a container's log_path is relative to it. */
  log_directory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    security_context?: { namespace_options?: NamespaceOption; privileged?: boolean };
    sysctls?: Record<string, string>;
  };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string; annotations?: Record<string, string> };
  /** Replaces the image's entrypoint. */
  command?: string[];
  /** Replaces the image's cmd. */
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Relative to the pod's log_directory. */
  log_path?: string;
  linux?: { security_context?: { privileged?: boolean; namespace_options?: NamespaceOption; readonly_rootfs?: boolean } };
}

export interface Image {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  /** uint64 as a decimal string */
  size: string;
}

export interface ContainerStatus {
  id: string;
  metadata: { name: string; attempt: number } | null;
  state: ContainerState;
  /** Times are nanoseconds since the epoch, as decimal strings ("0" = not yet). */
  created_at: string;
  started_at: string;
  finished_at: string;
  exit_code: number;
  image: { image: string } | null;
  image_ref: string;
  reason: string;
  message: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  log_path: string;
}

export interface VersionInfo { version: string; runtime_name: string; runtime_version: string; runtime_api_version: string }

export interface PullAuth { username: string; password: string }

// ------------------------------------------------------------ loading the proto

/** The .proto stays in the source tree: tsc does not copy it to dist/. */
function protoPath(): string {
  const candidates = [join(__dirname, 'cri', 'api.proto'), resolve(__dirname, '../../../test/support/cri/api.proto')];
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error(`cannot find the CRI proto (tried ${candidates.join(', ')})`);
  return found;
}

let services: { runtime: grpc.ServiceClientConstructor; image: grpc.ServiceClientConstructor } | undefined;

function criServices() {
  if (!services) {
    const def = protoLoader.loadSync(protoPath(), { keepCase: true, longs: String, enums: String, defaults: true });
    const pkg = grpc.loadPackageDefinition(def) as any;
    services = { runtime: pkg.runtime.v1.RuntimeService, image: pkg.runtime.v1.ImageService };
  }
  return services;
}

/** A gRPC error from a CRI call, with the method in the message and the status code kept. */
export class CriError extends Error {
  constructor(readonly method: string, readonly code: grpc.status | undefined, details: string) {
    super(`CRI ${method} failed (${code === undefined ? 'no status' : grpc.status[code]}): ${details}`);
  }
}

export interface CallOptions { timeoutMs?: number }

// ------------------------------------------------------------ the client

export class CriClient {
  private readonly runtime: grpc.Client & Record<string, any>;
  private readonly image: grpc.Client & Record<string, any>;

  /** address: the unix socket of containerd (the CRI services share its gRPC socket). */
  constructor(readonly address: string, private readonly defaultTimeoutMs = 120_000) {
    const { runtime, image } = criServices();
    const target = `unix://${address}`;
    const creds = grpc.credentials.createInsecure();
    this.runtime = new runtime(target, creds) as grpc.Client & Record<string, any>;
    // One channel for both services.
    this.image = new image(target, creds, { channelOverride: this.runtime.getChannel() }) as grpc.Client & Record<string, any>;
  }

  private call<T>(client: Record<string, any>, method: string, req: object, opts: CallOptions = {}): Promise<T> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.defaultTimeoutMs);
    return new Promise((resolve, reject) => {
      client[method](req, { deadline }, (err: grpc.ServiceError | null, res: T) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res);
      });
    });
  }

  version(opts?: CallOptions): Promise<VersionInfo> {
    return this.call(this.runtime, 'Version', { version: 'v1' }, opts);
  }

  /** Polls Version until the CRI plugin answers (it finishes starting after containerd listens). */
  async waitReady(timeoutMs = 60_000, isAlive: () => boolean = () => true): Promise<VersionInfo> {
    const end = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      if (!isAlive()) throw new Error(`the CRI server at ${this.address} went away while starting: ${String(last)}`);
      try {
        return await this.version({ timeoutMs: 5_000 });
      } catch (e) {
        last = e;
      }
      if (Date.now() >= end) throw new Error(`CRI at ${this.address} not ready after ${timeoutMs} ms: ${String(last)}`);
      await sleep(200);
    }
  }

  // ---- images

  /** Pulls (and unpacks into the configured snapshotter) ref; resolves to the image id. */
  async pullImage(ref: string, auth?: PullAuth, opts: CallOptions & { sandboxConfig?: PodSandboxConfig } = {}):
    Promise<string> {
    const req: Record<string, unknown> = { image: { image: ref } };
    if (auth) req.auth = { username: auth.username, password: auth.password };
    if (opts.sandboxConfig) req.sandbox_config = opts.sandboxConfig;
    const r = await this.call<{ image_ref: string }>(this.image, 'PullImage', req, { timeoutMs: opts.timeoutMs ?? 300_000 });
    return r.image_ref;
  }

  /** The image, or null if the runtime does not have it. */
  async imageStatus(ref: string, opts?: CallOptions): Promise<Image | null> {
    const r = await this.call<{ image: Image | null }>(this.image, 'ImageStatus', { image: { image: ref } }, opts);
    return r.image && r.image.id ? r.image : null;
  }

  async listImages(ref?: string, opts?: CallOptions): Promise<Image[]> {
    const req = ref ? { filter: { image: { image: ref } } } : {};
    return (await this.call<{ images: Image[] }>(this.image, 'ListImages', req, opts)).images;
  }

  async removeImage(ref: string, opts?: CallOptions): Promise<void> {
    await this.call(this.image, 'RemoveImage', { image: { image: ref } }, opts);
  }

  // ---- pods

  /** Resolves to the pod sandbox id. runtimeHandler "" is the default runtime. */
  async runPodSandbox(config: PodSandboxConfig, runtimeHandler = '', opts?: CallOptions): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>(this.runtime, 'RunPodSandbox',
      { config, runtime_handler: runtimeHandler }, opts);
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(podId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { pod_sandbox_id: podId }, opts);
  }

  async removePodSandbox(podId: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { pod_sandbox_id: podId }, opts);
  }

  // ---- containers

  /** podConfig: the config the pod was run with (CRI wants it again). Resolves to the container id. */
  async createContainer(podId: string, config: ContainerConfig, podConfig: PodSandboxConfig, opts?: CallOptions):
    Promise<string> {
    const r = await this.call<{ container_id: string }>(this.runtime, 'CreateContainer',
      { pod_sandbox_id: podId, config, sandbox_config: podConfig }, opts);
    return r.container_id;
  }

  async startContainer(id: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { container_id: id }, opts);
  }

  async containerStatus(id: string, opts?: CallOptions): Promise<ContainerStatus> {
    const r = await this.call<{ status: ContainerStatus | null }>(this.runtime, 'ContainerStatus',
      { container_id: id, verbose: false }, opts);
    if (!r.status) throw new CriError('ContainerStatus', undefined, `no status for container ${id}`);
    return r.status;
  }

  /** timeoutS: seconds between SIGTERM and SIGKILL (0 = SIGKILL at once). */
  async stopContainer(id: string, timeoutS = 0, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'StopContainer', { container_id: id, timeout: String(timeoutS) }, opts);
  }

  async removeContainer(id: string, opts?: CallOptions): Promise<void> {
    await this.call(this.runtime, 'RemoveContainer', { container_id: id }, opts);
  }

  /** Polls ContainerStatus until the container has exited. */
  async waitExited(id: string, timeoutMs = 120_000): Promise<ContainerStatus> {
    const end = Date.now() + timeoutMs;
    let interval = 50;
    for (;;) {
      const s = await this.containerStatus(id);
      if (s.state === 'CONTAINER_EXITED') return s;
      if (Date.now() >= end) throw new Error(`container ${id} still ${s.state} after ${timeoutMs} ms`);
      await sleep(interval);
      interval = Math.min(interval * 2, 500);
    }
  }

  /**
   * A host-network pod (no CNI) → create → start → wait for exit → read the
   * CRI log → remove container, stop and remove the pod. Teardown runs even
   * when a step fails; a teardown failure is thrown only if the run itself
   * succeeded.
   */
  async runToCompletion(image: string, command: string[], opts: RunOptions): Promise<RunToCompletionResult> {
    const name = opts.name ?? `run-${process.pid}-${++runCounter}`;
    const logDirectory = join(opts.logRoot, name);
    await mkdir(logDirectory, { recursive: true });
    const podConfig = hostNetworkPod(name, logDirectory);
    const timings: RunToCompletionResult['timings'] = { podMs: 0, createMs: 0, startMs: 0, runMs: 0, teardownMs: 0 };
    const t = () => performance.now();
    let podId = '';
    let containerId = '';
    let result: RunToCompletionResult | undefined;
    let failure: unknown;
    try {
      let t0 = t();
      podId = await this.runPodSandbox(podConfig);
      timings.podMs = t() - t0;
      t0 = t();
      containerId = await this.createContainer(podId, {
        metadata: { name },
        image: { image },
        command,
        args: opts.args ?? [],
        envs: Object.entries(opts.env ?? {}).map(([key, value]) => ({ key, value })),
        log_path: `${name}.log`,
        linux: {},
      }, podConfig);
      timings.createMs = t() - t0;
      await opts.onCreated?.({ podId, containerId });
      t0 = t();
      await this.startContainer(containerId);
      timings.startMs = t() - t0;
      t0 = t();
      const status = await this.waitExited(containerId, opts.timeoutMs ?? 120_000);
      timings.runMs = t() - t0;
      const log = parseCriLog(await readFile(status.log_path || join(logDirectory, `${name}.log`), 'utf8'));
      result = { exitCode: status.exit_code, logs: log.all, stdout: log.stdout, stderr: log.stderr, status, podId,
        containerId, timings };
    } catch (e) {
      failure = e;
    }
    if (!opts.keep) {
      const t0 = t();
      const teardownErrors: unknown[] = [];
      const attempt = async (f: () => Promise<void>) => { try { await f(); } catch (e) { teardownErrors.push(e); } };
      if (containerId) {
        await attempt(() => this.stopContainer(containerId));
        await attempt(() => this.removeContainer(containerId));
      }
      if (podId) {
        await attempt(() => this.stopPodSandbox(podId));
        await attempt(() => this.removePodSandbox(podId));
      }
      timings.teardownMs = t() - t0;
      if (failure === undefined && teardownErrors.length > 0) {
        failure = new AggregateError(teardownErrors, `teardown of pod ${podId} failed`);
      }
    }
    if (failure !== undefined) throw failure;
    return result!;
  }

  close(): void {
    this.image.close();
    this.runtime.close();
  }
}

let runCounter = 0;

export interface RunOptions {
  /** A directory (absolute) under which each run gets its pod log_directory. */
  logRoot: string;
  /** Pod and container name; default run-<pid>-<n>. */
  name?: string;
  args?: string[];
  env?: Record<string, string>;
  /** How long the container may run (default 120 s). */
  timeoutMs?: number;
  /** Leave the container and pod in place (the caller tears down). */
  keep?: boolean;
  /** Awaited once the container exists (before it starts), e.g. to record ids or inspect its snapshot. */
  onCreated?(ids: { podId: string; containerId: string }): void | Promise<void>;
}

export interface RunToCompletionResult {
  exitCode: number;
  /** stdout and stderr interleaved as logged */
  logs: string;
  stdout: string;
  stderr: string;
  status: ContainerStatus;
  podId: string;
  containerId: string;
  /** Wall-clock milliseconds of each step. */
  timings: { podMs: number; createMs: number; startMs: number; runMs: number; teardownMs: number };
}

/** A pod in the host's network namespace: no CNI needed. uid/namespace are fixed test values. */
export function hostNetworkPod(name: string, logDirectory: string): PodSandboxConfig {
  return {
    metadata: { name, uid: `uid-${name}`, namespace: 'lazysnap-test', attempt: 0 },
    hostname: '',
    log_directory: logDirectory,
    labels: {},
    annotations: {},
    linux: { security_context: { namespace_options: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
  };
}

/**
 * The CRI log format: "<RFC3339Nano time> <stdout|stderr> <F|P> <text>" per
 * line; P (partial) lines continue in the next line of the same stream, F
 * ends a line.
 */
export function parseCriLog(text: string): { all: string; stdout: string; stderr: string } {
  const out = { all: '', stdout: '', stderr: '' };
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^(\S+) (stdout|stderr) ([FP]) ?(.*)$/.exec(line);
    if (!m) throw new Error(`not a CRI log line: ${JSON.stringify(line)}`);
    const piece = m[4] + (m[3] === 'F' ? '\n' : '');
    out.all += piece;
    out[m[2] as 'stdout' | 'stderr'] += piece;
  }
  return out;
}
