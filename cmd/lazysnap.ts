#!/usr/bin/env node
// lazysnap: the command-line tool for operators.
import { Command } from 'commander';
import { ConfigError, DEFAULT_CONFIG_TOML, loadConfig } from '../config/config';

const program = new Command('lazysnap').description('lazysnap command-line tool').exitOverride();

const config = program.command('config').description('configuration helpers');
config
  .command('default')
  .description('print the embedded default config')
  .action(() => {
    process.stdout.write(DEFAULT_CONFIG_TOML);
  });
config
  .command('check <file>')
  .description('validate a config file and print the effective config as JSON')
  .action((file: string) => {
    process.stdout.write(JSON.stringify(loadConfig(file), null, 2) + "\n");
  });

try {
  program.parse(process.argv);
} catch (err) {
  const e = err as Error & { code?: string };
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') process.exit(0);
  if (e.code?.startsWith('commander.')) process.exit(2);
  process.stderr.write(`lazysnap: ${e instanceof ConfigError ? e.message : (e.stack ?? e.message)}\n`);
  process.exit(1);
}
