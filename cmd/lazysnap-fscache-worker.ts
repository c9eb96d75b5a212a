#!/usr/bin/env node
// The fscache worker process, started by lazysnapd: its control socket is fd 3,
// its settings one JSON object in LAZYSNAP_WORKER_SETTINGS (worker/settings.ts).
import { newLogger } from '../log/logger';
import { runWorker } from '../worker/worker';
import { SETTINGS_ENV, SettingsError, decodeSettings } from '../worker/settings';
import type { LogLevel } from '../config/config';

let settings;
try {
  settings = decodeSettings(process.env[SETTINGS_ENV]);
} catch (err) {
  if (!(err instanceof SettingsError)) throw err;
  process.stderr.write(`lazysnap-fscache-worker: ${err.message}\n`);
  process.exit(2);
}
const log = newLogger(settings.logLevel as LogLevel, 'lazysnap-fscache-worker');
runWorker({ controlFd: 3, settings, log }).catch((err) => {
  log.fatal({ err }, 'fscache worker failed');
  process.exit(1);
});
