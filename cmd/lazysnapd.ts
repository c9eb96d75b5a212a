#!/usr/bin/env node
// lazysnapd: the snapshotter daemon containerd dials as a [proxy_plugins] snapshotter.
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { applyFlags, ConfigError, loadConfig } from '../config/config';
import { excerpt } from '../log/excerpt';
import { newLogger } from '../log/logger';
import { Snapshotter } from '../snapshotter/snapshotter';
import { serve, shutdown } from '../snapshotter/server';
import { SocketError } from '../snapshotter/socket';
import { adminService } from '../proto/load';
import { adminHandlers } from '../admin/service';
import { FscacheSetupError, startFscache } from '../supervisor/setup';
import { sdNotify } from '../native';

const SYSTEM_CONFIG = '/etc/lazysnap/config.toml';

/** Startup problems an operator can fix: printed as one line, exit 1. */
class StartupError extends Error {}

function checkRoot(root: string) {
  const parent = path.dirname(root);
  if (!fs.existsSync(parent)) throw new StartupError(`root ${excerpt(root)}: parent directory ${excerpt(parent)} does not exist`);
  const st = fs.statSync(root, { throwIfNoEntry: false });
  if (!st) return;
  if (!st.isDirectory()) throw new StartupError(`root ${excerpt(root)} is not a directory`);
  // lazysnapd makes its root 0700: never a directory others share
  if (root === '/' || st.mode & 0o1000) throw new StartupError(`root ${excerpt(root)} is a shared directory; give lazysnapd one of its own`);
  if (st.uid !== process.getuid!()) throw new StartupError(`root ${excerpt(root)} is owned by uid ${st.uid}, not by lazysnapd's (${process.getuid!()})`);
}

async function main(argv: string[]) {
  const program = new Command('lazysnapd')
    .description('containerd remote snapshotter (proxy plugin) serving lazy nydus images and plain OCI images')
    .option('--config <file>', `TOML config file (default ${'/etc/lazysnap/config.toml'} if it exists, else the embedded defaults)`)
    .option('--root <dir>', 'state directory (overrides config "root")')
    .option('--address <socket>', 'unix socket to serve on (overrides config "address")')
    .option('--log-level <level>', 'overrides config log.level')
    .exitOverride()
    // commander's usage errors are one line too ("(Did you mean …?)" joins it)
    .configureOutput({ outputError: (str, write) => write(`lazysnapd: ${str.trim().replace(/\s*\n\s*/g, ' ')}\n`) })
    .parse(argv);
  const opts = program.opts<{ config?: string; root?: string; address?: string; logLevel?: string }>();
  // Like containerd with /etc/containerd/config.toml: the system config is used when present.
  if (opts.config === '') throw new ConfigError('--config must not be empty');
  const file = opts.config ?? (fs.existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : undefined);
  const cfg = applyFlags(loadConfig(file), opts, (p) => path.resolve(p));
  const log = newLogger(cfg.log.level);

  checkRoot(cfg.root);
  const sn = Snapshotter.open(cfg.root, log);
  const images = () => sn.store.fscacheImages;
  const fscache = await startFscache(cfg, images, log);
  sn.lazy = fscache.lazy;
  const admin = adminHandlers({
    mounter: fscache.mounter,
    supervisor: fscache.supervisor,
    images,
    fscacheDisabledReason: fscache.disabledReason,
    mountDirs: cfg.admin.mount_dirs,
    log,
  });
  const server = await serve(sn, cfg.address, log, [{ definition: adminService().service, handlers: admin }]);
  log.info({ root: cfg.root, address: cfg.address, fscache: fscache.disabledReason ?? 'enabled', backend: fscache.mounter?.backend }, 'lazysnapd serving');
  sdNotify('READY=1');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    await shutdown(server);
    // With images mounted, the serving worker stays: containers keep reading, and the next lazysnapd takes over.
    await fscache.supervisor?.stop({ keepActive: images().all().length > 0 });
    sn.close();
    fs.rmSync(cfg.address, { force: true });
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main(process.argv).catch((err: Error & { code?: string }) => {
  if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0);
  if (err.code?.startsWith('commander.')) process.exit(1); // commander has printed it
  const known = err instanceof ConfigError || err instanceof SocketError || err instanceof StartupError || err instanceof FscacheSetupError;
  process.stderr.write(`lazysnapd: ${known ? err.message : (err.stack ?? err.message)}\n`);
  process.exit(1);
});
