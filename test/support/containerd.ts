// A private containerd (own root, state, socket, config) with lazysnap as a
// proxy snapshotter. Shims and runc keep state in /run/containerd no matter
// what root/state say, so stop() cleans up only what this instance created.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTAINERD_DIR, bin, requireBinaries } from './bins';
import { describe, failureMessage, isRunning, run, spawnDaemon, stopDaemon, tail, type Daemon, type RunResult }
  from './proc';
import { unmountAll } from './tmp';
import { canConnect, waitFor } from './wait';

/** Fixed in 1.6, 1.7 and 2.x alike (defaults.DefaultStateDir), whatever `state` says: shim sockets, fifos, runc roots. */
const SHARED_STATE = '/run/containerd';

export interface ContainerdOptions {
  /** Dedicated directory: config.toml, containerd.sock, containerd.log, root/, state/, opt/. */
  dir: string;
  /** Unix socket of the snapshotter registered as proxy plugin snapshotterName. */
  snapshotterSocket: string;
  snapshotterName?: string;
  /** host:port of a plain-HTTP registry: writes certs.d/<host>/hosts.toml (see hostsDir). */
  registryHost?: string;
  namespace?: string;
  /** TOML appended verbatim to config.toml (e.g. CRI settings). */
  extraConfig?: string;
  /** Plugins to disable; the default drops CRI (slow start, CNI noise) and snapshotters that cannot load here. */
  disabledPlugins?: string[];
}

export interface CtrOptions { timeoutMs?: number; input?: string }

export interface Containerd {
  address: string;
  namespace: string;
  dir: string;
  logPath: string;
  configPath: string;
  /** certs.d directory for `ctr ... --hosts-dir` and CRI's registry.config_path. */
  hostsDir: string;
  daemon: Daemon;
  version: ContainerdVersion;
  /** Runs `ctr --address <address> -n <namespace> <args>`; resolves whatever the exit code. */
  ctr(args: string[], opts?: CtrOptions): Promise<RunResult>;
  /** Like ctr(), but rejects unless ctr exits 0 (message includes stderr and containerd's log tail). */
  ctrOk(args: string[], opts?: CtrOptions): Promise<RunResult>;
  /**
   * `ctr run --rm` of a shell command whose stdout and stderr go to files on a
   * bind mount. ctr's own stdout copy races a quick exit and sometimes yields
   * nothing (seen with 1.7.24 on a 0-exit sha256sum), so tests read files.
   */
  ctrRun(o: CtrRunOptions): Promise<RunResult>;
  stop(): Promise<void>;
}

export interface CtrRunOptions {
  snapshotter: string;
  ref: string;
  id: string;
  /** A shell command line; its output is redirected by the caller's shell. */
  command: string;
  /** The image's shell; busybox images that lack /bin/sh can use ['/bin/busybox', 'sh']. */
  shell?: string[];
  timeoutMs?: number;
}

/** Plugins that cannot load here (or are slow and noisy: CRI, unless wanted), by config version. */
export function disabledPlugins(major: number, o: { cri: boolean }): string[] {
  const always = [
    'io.containerd.snapshotter.v1.btrfs',
    'io.containerd.snapshotter.v1.devmapper',
    'io.containerd.snapshotter.v1.zfs',
    'io.containerd.tracing.processor.v1.otlp',
    'io.containerd.internal.v1.tracing',
  ];
  // 2.x split CRI into images, runtime and the gRPC service; 1.x has one plugin (and aufs).
  const cri = major >= 2
    ? ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.runtime', 'io.containerd.cri.v1.images',
      'io.containerd.podsandbox.controller.v1.podsandbox']
    : ['io.containerd.grpc.v1.cri'];
  return [...(major >= 2 ? [] : ['io.containerd.snapshotter.v1.aufs']), ...always, ...(o.cri ? [] : cri)];
}

let versionCache: ContainerdVersion | undefined;
export interface ContainerdVersion { major: number; minor: number; patch: number; text: string }

/** The version of the containerd the tests run (LAZYSNAP_CONTAINERD_DIR, else bookworm's). */
export function containerdVersion(): ContainerdVersion {
  if (versionCache) return versionCache;
  requireBinaries(['containerd']);
  const out = execFileSync(bin('containerd'), ['--version'], { encoding: 'utf8' });
  const m = /\s(?:v)?(\d+)\.(\d+)\.(\d+)/.exec(out);
  if (!m) throw new Error(`cannot read a version from '${out.trim()}'`);
  versionCache = { major: +m[1], minor: +m[2], patch: +m[3], text: `containerd ${m[1]}.${m[2]}.${m[3]}` };
  return versionCache;
}

export interface ConfigInput {
  major: number;
  dir: string;
  address: string;
  snapshotterName: string;
  snapshotterSocket: string;
  disabled: string[];
  hostsDir: string;
}

/**
 * config.toml as an operator of that version writes it: version 2 for 1.6
 * and 1.7; a native version 3 for 2.x, where `ctr pull` goes through the
 * transfer service (it unpacks only into snapshotters in its unpack_config)
 * and the proxy plugin exports enable_remote_snapshot_annotations (without
 * it 2.x sends no cri.image-ref, and lazysnap refuses the nydus layers).
 */
export function containerdConfig(o: ConfigInput): string {
  const lines = [
    `version = ${o.major >= 2 ? 3 : 2}`,
    `root = ${q(join(o.dir, 'root'))}`,
    `state = ${q(join(o.dir, 'state'))}`,
    `disabled_plugins = [${o.disabled.map(q).join(', ')}]`,
    '[grpc]',
    `  address = ${q(o.address)}`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(o.dir, 'opt'))}`,
    `[proxy_plugins.${o.snapshotterName}]`,
    '  type = "snapshot"',
    `  address = ${q(o.snapshotterSocket)}`,
  ];
  if (o.major >= 2) {
    lines.push(
      '  exports = { enable_remote_snapshot_annotations = "true" }',
      '[plugins."io.containerd.transfer.v1.local"]',
      `  config_path = ${q(o.hostsDir)}`,
      '[[plugins."io.containerd.transfer.v1.local".unpack_config]]',
      '  platform = "linux/amd64"',
      `  snapshotter = ${q(o.snapshotterName)}`,
    );
  }
  return lines.join('\n') + '\n';
}

export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc']);
  const dir = opts.dir;
  const name = opts.snapshotterName ?? 'lazysnap';
  const namespace = opts.namespace ?? 'lazysnap-test';
  const address = join(dir, 'containerd.sock');
  const configPath = join(dir, 'config.toml');
  const logPath = join(dir, 'containerd.log');
  const hostsDir = join(dir, 'certs.d');
  await mkdir(hostsDir, { recursive: true });
  if (opts.registryHost) {
    const h = opts.registryHost;
    await mkdir(join(hostsDir, h), { recursive: true });
    await writeFile(join(hostsDir, h, 'hosts.toml'),
      `server = "http://${h}"\n[host."http://${h}"]\n  capabilities = ["pull", "resolve", "push"]\n`);
  }
  const version = containerdVersion();
  await writeFile(configPath, containerdConfig({
    major: version.major, dir, address, snapshotterName: name, snapshotterSocket: opts.snapshotterSocket, hostsDir,
    disabled: opts.disabledPlugins ?? disabledPlugins(version.major, { cri: false }),
  }) + (opts.extraConfig ?? '') + '\n');

  // containerd finds containerd-shim-runc-v2 and runc via PATH.
  const env = { ...process.env, PATH: `${CONTAINERD_DIR}:/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}` };
  const daemon = spawnDaemon(bin('containerd'), ['--config', configPath, '--log-level', 'debug'], logPath, env);

  const ctr = (args: string[], o: CtrOptions = {}) =>
    run(bin('ctr'), ['--address', address, '-n', namespace, ...args], { timeoutMs: o.timeoutMs ?? 120_000, input: o.input });
  const ctrOk = async (args: string[], o: CtrOptions = {}) => {
    const r = await ctr(args, o);
    if (r.code !== 0) {
      throw new Error(failureMessage(describe('ctr', args), r) + `\n--- containerd log tail (${logPath}) ---\n` +
        await tail(logPath));
    }
    return r;
  };
  const ctrRun = async (o: CtrRunOptions): Promise<RunResult> => {
    const out = join(dir, 'ctr-run', o.id);
    await mkdir(out, { recursive: true });
    const shell = o.shell ?? ['/bin/sh'];
    const r = await ctr(['run', '--rm', '--snapshotter', o.snapshotter,
      '--mount', `type=bind,src=${out},dst=/.ctr-run-out,options=rbind:rw`, o.ref, o.id,
      ...shell, '-c', `{ ${o.command} ; } >/.ctr-run-out/stdout 2>/.ctr-run-out/stderr`], { timeoutMs: o.timeoutMs });
    const read = (f: string) => readFile(join(out, f), 'utf8').catch(() => '');
    const res = { ...r, stdout: await read('stdout'), stderr: `${await read('stderr')}${r.stderr}` };
    await rm(out, { recursive: true, force: true });
    return res;
  };
  const stop = () => stopContainerd({ daemon, dir, address, namespace, ctr });

  try {
    await waitFor(async () => {
      if (!isRunning(daemon)) throw new Error(`containerd exited during startup:\n${await tail(logPath)}`);
      return canConnect(address);
    }, { what: `containerd to listen on ${address} (log: ${logPath})`, timeoutMs: 20_000 });
  } catch (e) {
    await stop();
    throw e;
  }
  return { address, namespace, dir, logPath, configPath, hostsDir, daemon, version, ctr, ctrOk, ctrRun, stop };
}

interface Instance {
  daemon: Daemon;
  dir: string;
  address: string;
  namespace: string;
  ctr(args: string[], opts?: CtrOptions): Promise<RunResult>;
}

/** Kills tasks, containerd, leftover shims and runc containers of this instance, then its shared-state files. */
async function stopContainerd(c: Instance): Promise<void> {
  const ids = new Set<string>();
  if (isRunning(c.daemon)) {
    // Let containerd tear tasks down properly while it still can.
    const tasks = await c.ctr(['tasks', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => undefined);
    for (const id of lines(tasks?.stdout)) {
      ids.add(id);
      await c.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 10_000 }).catch(() => undefined);
      await c.ctr(['tasks', 'delete', '-f', id], { timeoutMs: 10_000 }).catch(() => undefined);
    }
    const containers = await c.ctr(['containers', 'ls', '-q'], { timeoutMs: 10_000 }).catch(() => undefined);
    for (const id of lines(containers?.stdout)) {
      ids.add(id);
      await c.ctr(['containers', 'rm', id], { timeoutMs: 10_000 }).catch(() => undefined);
    }
  }
  await stopDaemon(c.daemon, 'SIGTERM', 10_000);

  // Shims outlive containerd by design; ours carry "-address <our socket>".
  for (const pid of await pidsWithArgs(['-address', c.address])) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  // Containers whose shim was killed are still known to runc; ours have their bundle in our state dir.
  const runcRoot = join(SHARED_STATE, 'runc', c.namespace);
  const listed = await run(bin('runc'), ['--root', runcRoot, 'list', '--format', 'json'], { timeoutMs: 10_000 })
    .catch(() => undefined);
  const states = parseRuncList(listed?.stdout);
  for (const s of states.filter((s) => s.bundle.startsWith(c.dir + '/'))) {
    ids.add(s.id);
    await run(bin('runc'), ['--root', runcRoot, 'delete', '--force', s.id], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  for (const id of ids) {
    await rm(join(runcRoot, id), { recursive: true, force: true });
    await rm(shimSocket(c.address, c.namespace, id), { force: true });
  }
  await removeFifoDirs(ids);
  for (const d of [runcRoot, join(SHARED_STATE, 'runc'), join(SHARED_STATE, 's'), join(SHARED_STATE, 'fifo'),
    SHARED_STATE]) {
    await rmdir(d).catch(() => undefined); // only if empty: other containerds may share it
  }
  await unmountAll(c.dir); // rootfs mounts of tasks that never got deleted
}

/** runtime/v2/shim.SocketAddress in containerd 1.6: /run/containerd/s/sha256(address/ns/id). */
function shimSocket(address: string, namespace: string, id: string): string {
  return join(SHARED_STATE, 's', createHash('sha256').update(join(address, namespace, id)).digest('hex'));
}

/** ctr makes /run/containerd/fifo/<random>/<id>-std{in,out,err}; delete the dirs that hold only ours. */
async function removeFifoDirs(ids: Set<string>): Promise<void> {
  const root = join(SHARED_STATE, 'fifo');
  for (const d of await readdir(root).catch(() => [] as string[])) {
    const names = await readdir(join(root, d)).catch(() => [] as string[]);
    const ours = names.every((n) => { const m = /^(.*)-std(in|out|err)$/.exec(n); return m !== null && ids.has(m[1]); });
    if (names.length > 0 && ours) await rm(join(root, d), { recursive: true, force: true });
  }
}

async function pidsWithArgs(seq: string[]): Promise<number[]> {
  const pids: number[] = [];
  for (const ent of await readdir('/proc')) {
    if (!/^\d+$/.test(ent)) continue;
    const argv = await readFile(`/proc/${ent}/cmdline`, 'utf8').then((s) => s.split('\0')).catch(() => []);
    for (let i = 0; i + seq.length <= argv.length; i++) {
      if (seq.every((a, j) => argv[i + j] === a)) { pids.push(Number(ent)); break; }
    }
  }
  return pids;
}

function parseRuncList(text: string | undefined): { id: string; bundle: string }[] {
  try {
    const v = JSON.parse(text ?? 'null') as { id: string; bundle: string }[] | null;
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

function lines(s: string | undefined): string[] {
  return (s ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
}

function q(s: string): string {
  return JSON.stringify(s); // a TOML basic string for the paths we write
}
