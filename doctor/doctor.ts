// `lazysnap doctor`: everything a node needs for lazysnap, checked in one
// go, each finding with its fix. lazysnapd runs the quiet part (no probes of
// devices it is about to use itself) at start and logs what is not ok.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config/config';
import { loadCachefilesModule } from '../supervisor/cachefiles';
import { lockHolder } from '../supervisor/instance-lock';
import { cacheDirOf, deviceLockFile } from '../supervisor/setup';
import { credentialFileExposure, parseDockerConfig } from '../registry/docker-config';
import { parseHostsToml } from '../registry/hosts';
import { parseProviderConfig } from '../registry/credential-provider';
import { checkContainerdConfig } from './containerd';
import { Finding, fail, ok, warn } from './finding';
import { optionState, readKernelConfig } from './kernel-config';
import { filesystemOf, kernelFilesystems, probeCachefilesOndemand, probeErofsFileBacked, probeFanotifyPrecontent } from './probes';

export interface DoctorOptions {
  /** containerd's config file */
  containerdConfig: string;
  /** also probe the kernel (bind /dev/cachefiles, mount, mark) and load the cachefiles module; lazysnapd's own start does neither (it has done both its own way, and must not block its loop) */
  probes: boolean;
}

export async function runDoctor(cfg: Config, o: DoctorOptions): Promise<Finding[]> {
  const out: Finding[] = [];
  out.push(...kernelFindings(cfg, o.probes));
  if (o.probes) out.push(...(await probeFindings(cfg)));
  out.push(...checkContainerdConfig(readOrNull(o.containerdConfig), o.containerdConfig, cfg.address));
  out.push(...registryFindings(cfg));
  out.push(...stateFindings(cfg));
  return out;
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** From /proc/filesystems and the kernel's build config: no side effects but loading modules. */
function kernelFindings(cfg: Config, modprobe: boolean): Finding[] {
  const out: Finding[] = [];
  const fss = kernelFilesystems();
  out.push(fss.has('overlay') ? ok('kernel: overlay', 'overlayfs is there (every container mount is one)') : fail('kernel: overlay', 'no overlay in /proc/filesystems', 'modprobe overlay (CONFIG_OVERLAY_FS)'));
  out.push(fss.has('erofs') ? ok('kernel: EROFS', 'erofs is there') : warn('kernel: EROFS', 'no erofs in /proc/filesystems: nydus images cannot run lazily (plain OCI images can)', 'modprobe erofs (CONFIG_EROFS_FS)'));
  const kc = readKernelConfig();
  if (kc) {
    const on = (n: string) => optionState(kc.config, n) !== 'not set';
    const state = (n: string) => `${n} ${optionState(kc.config, n)}`;
    const fscache = ['CONFIG_CACHEFILES', 'CONFIG_CACHEFILES_ONDEMAND', 'CONFIG_EROFS_FS_ONDEMAND'];
    out.push(fscache.every(on)
      ? ok('kernel: fscache on-demand', `${fscache.map(state).join(', ')} (${kc.from})`)
      : warn('kernel: fscache on-demand', `${fscache.map(state).join(', ')} (${kc.from}): no lazy images through fscache`, 'a kernel with these options, or the fanotify backend (Linux >= 6.14)'));
    const fan = ['CONFIG_FANOTIFY', 'CONFIG_FANOTIFY_ACCESS_PERMISSIONS', 'CONFIG_EROFS_FS_BACKED_BY_FILE'];
    out.push(fan.every(on)
      ? ok('kernel: fanotify backend options', `${fan.map(state).join(', ')} (${kc.from})`)
      : warn('kernel: fanotify backend options', `${fan.map(state).join(', ')} (${kc.from}): no lazy images through fanotify`, 'Linux >= 6.14 with these options, or the fscache backend'));
  } else {
    out.push(warn('kernel: build options', 'neither /proc/config.gz nor /boot/config-' + os.release() + ': only the probes tell', 'run lazysnap doctor (it probes) as root'));
  }
  const device = cfg.fscache.device;
  if (!fs.existsSync(device)) {
    const why = modprobe ? loadCachefilesModule() : 'not loaded';
    out.push(fs.existsSync(device)
      ? ok('kernel: cachefiles module', `loaded it (modprobe cachefiles); ${device} is there`)
      : warn('kernel: cachefiles module', `${device} does not exist${why ? ` (${why})` : ''}`, 'modprobe cachefiles, on a kernel with CONFIG_CACHEFILES; without it lazy images go through fanotify, or are downloaded whole'));
  } else out.push(ok('kernel: cachefiles module', `${device} is there`));
  return out;
}

/** Does each thing once in a scratch directory beside the cache. */
async function probeFindings(cfg: Config): Promise<Finding[]> {
  const out: Finding[] = [];
  const cacheDir = cacheDirOf(cfg);
  // the cache dir's filesystem is what cachefiles and fanotify marks need to accept; probe there
  const base = fs.existsSync(cacheDir) ? cacheDir : firstExisting(cacheDir);
  const scratch = fs.mkdtempSync(path.join(base, '.lazysnap-doctor-'));
  try {
    const fstype = filesystemOf(base);
    out.push(['tmpfs', 'overlayfs', 'nfs', 'fuse'].includes(fstype)
      ? fail('cache dir: filesystem', `${cacheDir} would be on ${fstype}: cachefiles needs xattrs and fanotify pre-content marks, which it refuses`, 'set fscache.cache_dir on ext4 or xfs')
      : ok('cache dir: filesystem', `${base} is on ${fstype}`));
    const device = cfg.fscache.device;
    const holder = lockHolder(deviceLockFile(device));
    if (holder) out.push(ok('kernel: cachefiles on-demand', `${device} is bound by lazysnapd pid ${holder} (in use, so not probed again)`));
    else if (fs.existsSync(device)) {
      const why = probeCachefilesOndemand(device, path.join(scratch, 'cache'));
      out.push(why ? fail('kernel: cachefiles on-demand', why, 'a kernel with CONFIG_CACHEFILES_ONDEMAND and EROFS_FS_ONDEMAND, or the fanotify backend') : ok('kernel: cachefiles on-demand', `${device} binds in on-demand mode`));
    } else out.push(warn('kernel: cachefiles on-demand', `${device} does not exist: not probed`));
    const fb = await probeErofsFileBacked(scratch);
    out.push(fb ? warn('kernel: EROFS file-backed mounts', fb, 'Linux >= 6.12 with CONFIG_EROFS_FS_BACKED_BY_FILE, for the fanotify and download backends') : ok('kernel: EROFS file-backed mounts', 'an EROFS image file mounts directly'));
    const fan = probeFanotifyPrecontent(scratch);
    out.push(fan ? warn('kernel: fanotify pre-content events', fan, 'Linux >= 6.14, for the fanotify backend') : ok('kernel: fanotify pre-content events', `a pre-content mark holds on ${fstype}`));
    const fscacheOk = out.some((f) => f.check === 'kernel: cachefiles on-demand' && f.verdict === 'ok');
    const lazy = fscacheOk ? 'fscache' : !fb && !fan ? 'fanotify' : null;
    out.push(lazy
      ? ok('lazy images', `fscache.backend = "auto" serves them through ${lazy}`)
      : fail('lazy images', `no lazy backend here: nydus images are downloaded whole before they run${fb ? ' (and need EROFS file-backed mounts for that)' : ''}`, 'a kernel with fscache on-demand, or Linux >= 6.14'));
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  return out;
}

function firstExisting(p: string): string {
  let d = p;
  while (!fs.existsSync(d)) d = path.dirname(d);
  return d;
}

function registryFindings(cfg: Config): Finding[] {
  const out: Finding[] = [];
  const dir = cfg.registry.config_path;
  if (!fs.existsSync(dir)) {
    out.push(ok('registry: hosts.toml', `${dir} does not exist: registries are reached at their own names (https; http for loopback${cfg.registry.plain_http ? ' and, with plain_http, all' : ''})`));
  } else {
    let n = 0;
    for (const host of fs.readdirSync(dir)) {
      const file = path.join(dir, host, 'hosts.toml');
      if (!fs.existsSync(file)) continue;
      n++;
      try {
        parseHostsToml(fs.readFileSync(file, 'utf8'), host.replace(/^_default$/, 'docker.io'), path.dirname(file), file, cfg.registry.plain_http);
      } catch (err) {
        out.push(fail('registry: hosts.toml', (err as Error).message.split('\n')[0], 'fix the file; containerd reads it too'));
      }
    }
    if (!out.length) out.push(ok('registry: hosts.toml', `${n} hosts.toml in ${dir} parse`));
  }
  const cpc = cfg.registry.credential_provider_config;
  if (cpc) {
    try {
      const ps = parseProviderConfig(fs.readFileSync(cpc, 'utf8'), cpc);
      const missing = ps.filter((p) => {
        try {
          fs.accessSync(path.join(cfg.registry.credential_provider_bin_dir, p.name), fs.constants.X_OK);
          return false;
        } catch {
          return true;
        }
      });
      out.push(missing.length
        ? fail('registry: credential providers', `no executable ${missing.map((p) => p.name).join(', ')} in ${cfg.registry.credential_provider_bin_dir}`, 'install the plugins kubelet uses there')
        : ok('registry: credential providers', `${ps.map((p) => p.name).join(', ')} from ${cpc}`));
    } catch (err) {
      out.push(fail('registry: credential providers', (err as Error).message.split('\n')[0], `fix ${cpc}; kubelet reads it too`));
    }
  }
  const creds = cfg.registry.docker_config;
  if (!fs.existsSync(creds)) {
    out.push(ok('registry: credentials', `${creds} does not exist: anonymous pulls (private images need credentials there, or from CRI)`));
  } else {
    const exposed = credentialFileExposure(creds);
    let parsed: string | null = null;
    try {
      const c = parseDockerConfig(fs.readFileSync(creds, 'utf8'), creds);
      parsed = `${Object.keys(c.auths ?? {}).length} registries, ${c.credHelpers ? Object.keys(c.credHelpers).length : 0} credential helpers${c.credsStore ? `, store ${c.credsStore}` : ''}`;
    } catch (err) {
      out.push(fail('registry: credentials', (err as Error).message.split('\n')[0], 'fix or remove the file'));
    }
    if (exposed) out.push(fail('registry: credentials', exposed, `chmod 600 ${creds}`));
    else if (parsed) out.push(ok('registry: credentials', `${creds}: ${parsed}`));
  }
  return out;
}

/** lazysnapd's root, socket and lock. */
function stateFindings(cfg: Config): Finding[] {
  const out: Finding[] = [];
  const st = fs.statSync(cfg.root, { throwIfNoEntry: false });
  if (!st) out.push(ok('state: root', `${cfg.root} does not exist yet (lazysnapd makes it 0700)`));
  else if ((st.mode & 0o077) !== 0 || st.uid !== process.getuid!()) {
    out.push(warn('state: root', `${cfg.root} has mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}`, "lazysnapd makes it 0700 at its next start; or chmod 700 it"));
  } else out.push(ok('state: root', `${cfg.root} is 0700`));
  const sock = fs.statSync(cfg.address, { throwIfNoEntry: false });
  const running = lockHolder(path.join(cfg.root, 'lazysnapd.lock'));
  if (!sock) out.push(warn('state: socket', `${cfg.address} does not exist: lazysnapd is not running`, 'start it (systemctl start lazysnapd)'));
  else if (!sock.isSocket()) out.push(fail('state: socket', `${cfg.address} is not a socket`, 'remove it; lazysnapd makes the socket'));
  else if ((sock.mode & 0o077) !== 0) out.push(fail('state: socket', `${cfg.address} has mode ${(sock.mode & 0o777).toString(8)}: others can reach the snapshotter`, 'restart lazysnapd (it makes the socket 0600)'));
  else out.push(ok('state: socket', `${cfg.address} is 0600${running ? `, lazysnapd pid ${running} holds the root` : ''}`));
  return out;
}
