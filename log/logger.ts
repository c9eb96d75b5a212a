// JSON logs on stdout (pino): one object per line, for journald and log shippers.
import pino, { Logger } from 'pino';
import type { LogLevel } from '../config/config';

export function newLogger(level: LogLevel, name = 'lazysnapd'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
