// containerd with its CRI plugin, lazysnap as the CRI snapshotter, inside the
// UML test kernel (test/kernel/*). Built on the host-side starter in
// containerd.ts: the same private root/state/socket layout and the same
// stop() cleanup, plus the CRI settings a guest needs:
//   - root and state under a guest directory (tmpfs or the ext4 at
//     $FSCACHE_DIR): overlayfs upper dirs on hostfs come up read-only;
//   - no AppArmor, restricted oom_score_adj, runc;
//   - a local sandbox ("pause") image, pulled by CRI itself from the test
//     registry (the upstream pause image is out of reach offline);
//   - hosts.toml for the plain-HTTP registry on 127.0.0.1;
//   - CNI config/bin dirs inside the guest directory (pods use the host
//     network, so CNI is never called; containerd would otherwise create
//     /etc/cni/net.d through hostfs on the host).
import { chmod, copyFile, mkdir, rm, statfs, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bin, requireBinaries } from './bins';
import { containerdVersion, disabledPlugins, startContainerd, type Containerd } from './containerd';
import { CriClient } from './cri';
import { isRunning, runOk, tail } from './proc';

/** The containerd namespace the CRI plugin works in. */
export const CRI_NAMESPACE = 'k8s.io';

const HOSTFS_MAGIC = 0x00c0ffee;

export interface GuestContainerdOptions {
  /** A fresh directory that is not on hostfs (e.g. from guestDir()). */
  dir: string;
  /** lazysnapd's socket, registered as proxy snapshotter `snapshotterName` and used by CRI. */
  snapshotterSocket: string;
  snapshotterName?: string;
  /** the snapshotter CRI uses, when not the proxy one (e.g. the built-in overlayfs, for comparisons) */
  criSnapshotter?: string;
  /** host:port of the plain-HTTP test registry (gets a hosts.toml). */
  registryHost: string;
  /** CRI's sandbox_image, e.g. "<registryHost>/test/pause:1" (see buildPauseImage). */
  sandboxImage: string;
  /** TOML appended to config.toml after the CRI tables. */
  extraConfig?: string;
  /** How long to wait for the CRI plugin to answer Version (default 60 s). */
  readyTimeoutMs?: number;
}

export interface GuestContainerd {
  /** containerd's socket; the CRI services are served on it as well. */
  address: string;
  criAddress: string;
  /** A CRI client on criAddress (closed by stop()). */
  cri: CriClient;
  /** `ctr --address … -n k8s.io …` (resolves whatever the exit code) and its strict variant. */
  ctr: Containerd['ctr'];
  ctrOk: Containerd['ctrOk'];
  ctrRun: Containerd['ctrRun'];
  logPath: string;
  configPath: string;
  dir: string;
  containerd: Containerd;
  /** containerd version and CRI runtime version as reported by CRI Version. */
  runtimeVersion: string;
  /**
   * Runs containerd's garbage collection now and waits for it (deleting a
   * lease with --sync does). containerd schedules GC itself after deletions,
   * but a deletion that lands while a collection runs can wait for the next
   * trigger; kubelet's steady activity provides one, a test does not.
   */
  collectGarbage(): Promise<void>;
  /** Kills tasks, containerd and its shims, unmounts what is left beneath dir. */
  stop(): Promise<void>;
}

/**
 * The CRI part of config.toml: version 2 for 1.6/1.7 (one plugin,
 * io.containerd.grpc.v1.cri), version 3 for 2.x (images and runtime are
 * plugins of their own; the sandbox image is a pinned image).
 */
export function criConfig(o: { major: number; snapshotter: string; sandboxImage: string; hostsDir: string; cniDir: string }): string {
  const q = (s: string) => JSON.stringify(s);
  if (o.major >= 2) {
    const images = '[plugins."io.containerd.cri.v1.images"]';
    const runtime = '[plugins."io.containerd.cri.v1.runtime"]';
    const sub = (t: string, s: string) => `${t.slice(0, -1)}.${s}]`;
    return [
      images,
      `  snapshotter = ${q(o.snapshotter)}`,
      '  disable_snapshot_annotations = false',
      sub(images, 'pinned_images'),
      `  sandbox = ${q(o.sandboxImage)}`,
      sub(images, 'registry'),
      `  config_path = ${q(o.hostsDir)}`,
      runtime,
      '  disable_apparmor = true',
      '  restrict_oom_score_adj = true',
      sub(runtime, 'containerd'),
      '  default_runtime_name = "runc"',
      sub(runtime, 'containerd.runtimes.runc'),
      '  runtime_type = "io.containerd.runc.v2"',
      sub(runtime, 'cni'),
      `  bin_dirs = [${q(join(o.cniDir, 'bin'))}]`,
      `  conf_dir = ${q(join(o.cniDir, 'net.d'))}`,
      '[plugins."io.containerd.grpc.v1.cri"]',
      '  stream_server_address = "127.0.0.1"',
      '',
    ].join('\n');
  }
  const cri = '[plugins."io.containerd.grpc.v1.cri"]';
  return [
    cri,
    '  disable_apparmor = true',
    '  restrict_oom_score_adj = true',
    `  sandbox_image = ${q(o.sandboxImage)}`,
    '  stream_server_address = "127.0.0.1"',
    `${cri.slice(0, -1)}.containerd]`,
    `  snapshotter = ${q(o.snapshotter)}`,
    '  disable_snapshot_annotations = false',
    '  default_runtime_name = "runc"',
    `${cri.slice(0, -1)}.containerd.runtimes.runc]`,
    '  runtime_type = "io.containerd.runc.v2"',
    `${cri.slice(0, -1)}.cni]`,
    `  bin_dir = ${q(join(o.cniDir, 'bin'))}`,
    `  conf_dir = ${q(join(o.cniDir, 'net.d'))}`,
    `${cri.slice(0, -1)}.registry]`,
    `  config_path = ${q(o.hostsDir)}`,
    '',
  ].join('\n');
}

export async function startGuestContainerd(opts: GuestContainerdOptions): Promise<GuestContainerd> {
  requireBinaries(['containerd', 'ctr', 'shim', 'runc']);
  await mkdir(opts.dir, { recursive: true });
  if ((await statfs(opts.dir)).type === HOSTFS_MAGIC) {
    throw new Error(`${opts.dir} is on hostfs: containerd's root there gives read-only overlay upper dirs; ` +
      'use a directory under the guest\'s /run or $FSCACHE_DIR');
  }
  const snapshotter = opts.snapshotterName ?? 'lazysnap';
  const cniDir = join(opts.dir, 'cni');
  await mkdir(join(cniDir, 'bin'), { recursive: true });
  await mkdir(join(cniDir, 'net.d'), { recursive: true });
  const hostsDir = join(opts.dir, 'certs.d'); // what startContainerd writes hosts.toml into
  const containerd = await startContainerd({
    dir: opts.dir,
    snapshotterSocket: opts.snapshotterSocket,
    snapshotterName: snapshotter,
    registryHost: opts.registryHost,
    namespace: CRI_NAMESPACE,
    disabledPlugins: disabledPlugins(containerdVersion().major, { cri: true }),
    extraConfig: criConfig({ major: containerdVersion().major, snapshotter: opts.criSnapshotter ?? snapshotter, sandboxImage: opts.sandboxImage, hostsDir, cniDir }) + (opts.extraConfig ?? ''),
  });
  if (containerd.hostsDir !== hostsDir) {
    await containerd.stop();
    throw new Error(`containerd.ts put hosts.toml under ${containerd.hostsDir}, expected ${hostsDir}`);
  }
  const cri = new CriClient(containerd.address);
  let runtimeVersion: string;
  try {
    const v = await cri.waitReady(opts.readyTimeoutMs ?? 60_000, () => isRunning(containerd.daemon));
    runtimeVersion = `${v.runtime_name} ${v.runtime_version} (CRI ${v.runtime_api_version})`;
  } catch (e) {
    cri.close();
    const log = await tail(containerd.logPath, 6000);
    await containerd.stop();
    throw new Error(`${(e as Error).message}\n--- containerd log tail (${containerd.logPath}) ---\n${log}`);
  }
  return {
    address: containerd.address,
    criAddress: containerd.address,
    cri,
    ctr: containerd.ctr,
    ctrOk: containerd.ctrOk,
    ctrRun: containerd.ctrRun,
    logPath: containerd.logPath,
    configPath: containerd.configPath,
    dir: opts.dir,
    containerd,
    runtimeVersion,
    collectGarbage: async () => {
      const lease = (await containerd.ctrOk(['leases', 'create'])).stdout.trim().split(/\s+/)[0];
      await containerd.ctrOk(['leases', 'delete', '--sync', lease]);
    },
    stop: async () => {
      cri.close();
      await containerd.stop();
    },
  };
}

/**
 * An OCI layout (dir/oci, tag "pause") for CRI's sandbox_image: the static
 * busybox as /bin/sleep, running `/bin/sleep 2147483647`. Its one layer also
 * holds /etc/lazysnap-pause so it never shares a chain ID with the busybox
 * test image (which would leave that layer's snapshot labelled with the
 * pause image's ref).
 */
export async function buildPauseImage(dir: string): Promise<{ layoutDir: string; ref: string }> {
  requireBinaries(['umoci', 'busybox']);
  const rootfs = join(dir, 'rootfs');
  const layoutDir = join(dir, 'oci');
  const ref = 'pause';
  await rm(rootfs, { recursive: true, force: true });
  await rm(layoutDir, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'proc', 'sys', 'dev']) await mkdir(join(rootfs, d), { recursive: true });
  await copyFile(bin('busybox'), join(rootfs, 'bin/busybox'));
  await chmod(join(rootfs, 'bin/busybox'), 0o755);
  await symlink('busybox', join(rootfs, 'bin/sleep'));
  await writeFile(join(rootfs, 'etc/lazysnap-pause'), 'sandbox image of the lazysnap CRI tests\n');
  const umoci = bin('umoci');
  const image = `${layoutDir}:${ref}`;
  await runOk(umoci, ['init', '--layout', layoutDir]);
  await runOk(umoci, ['new', '--image', image]);
  await runOk(umoci, ['insert', '--image', image, rootfs, '/']);
  await runOk(umoci, ['config', '--image', image, '--config.entrypoint', '/bin/sleep', '--config.cmd', '2147483647',
    '--os', 'linux', '--architecture', 'amd64']);
  await runOk(umoci, ['gc', '--layout', layoutDir]);
  return { layoutDir, ref };
}
