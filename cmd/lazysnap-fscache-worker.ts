#!/usr/bin/env node
// The fscache worker process, started by lazysnapd with its control socket as fd 3.
import { newLogger } from '../log/logger';
import { runWorker } from '../fscache/worker';
import type { LogLevel } from '../config/config';

const log = newLogger((process.env.LAZYSNAP_LOG_LEVEL as LogLevel) ?? 'info', 'lazysnap-fscache-worker');
const [dbPath, takeoverPath] = process.argv.slice(2);
if (!dbPath) {
  process.stderr.write('usage: lazysnap-fscache-worker METADATA_DB [TAKEOVER_SOCKET] (control socket on fd 3)\n');
  process.exit(2);
}
runWorker({ controlFd: 3, dbPath, takeoverPath, log }).catch((err) => {
  log.fatal({ err }, 'fscache worker failed');
  process.exit(1);
});
