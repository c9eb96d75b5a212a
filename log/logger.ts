// JSON logs on stdout (pino): one object per line, for journald and log shippers.
import pino, { Logger } from 'pino';

// The level is checked against config's LOG_LEVELS before it gets here.
export function newLogger(level: pino.LevelWithSilent, name = 'lazysnapd'): Logger {
  return pino({ name, level, base: { pid: process.pid } });
}
