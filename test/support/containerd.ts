// A private containerd (own root, state, socket, config) with lazysnap as a
// proxy snapshotter. Shims and runc keep state in /run/containerd no matter
// what root/state say, so stop() cleans up only what this instance created.
import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CONTAINERD_DIR, bin, requireBinaries } from './bins';
import { describe, failureMessage, isRunning, run, spawnDaemon, stopDaemon, tail, type Daemon, type RunResult }
  from './proc';
import { unmountAll } from './tmp';
import { canConnect, waitFor } from './wait';

/** Fixed by containerd 1.6 (defaults.DefaultStateDir): shim sockets, fifos, runc roots. */
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
  /** Runs `ctr --address <address> -n <namespace> <args>`; resolves whatever the exit code. */
  ctr(args: string[], opts?: CtrOptions): Promise<RunResult>;
  /** Like ctr(), but rejects unless ctr exits 0 (message includes stderr and containerd's log tail). */
  ctrOk(args: string[], opts?: CtrOptions): Promise<RunResult>;
  stop(): Promise<void>;
}

export const DEFAULT_DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

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
  const disabled = opts.disabledPlugins ?? DEFAULT_DISABLED_PLUGINS;
  await writeFile(configPath, [
    'version = 2',
    `root = ${q(join(dir, 'root'))}`,
    `state = ${q(join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(q).join(', ')}]`,
    '[grpc]',
    `  address = ${q(address)}`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(dir, 'opt'))}`,
    `[proxy_plugins.${name}]`,
    '  type = "snapshot"',
    `  address = ${q(opts.snapshotterSocket)}`,
    opts.extraConfig ?? '',
    '',
  ].join('\n'));

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
  return { address, namespace, dir, logPath, configPath, hostsDir, daemon, ctr, ctrOk, stop };
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
