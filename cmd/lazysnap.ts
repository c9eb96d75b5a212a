#!/usr/bin/env node
// lazysnap: the command-line tool for operators.
import { Command } from 'commander';
import { ConfigError, DEFAULT_CONFIG_TOML, loadConfig } from '../config/config';
import { FormatError } from '../image/errors';
import { inspect } from './inspect';

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

program
  .command('inspect <bootstrap>')
  .description('print a RAFS v6 bootstrap: superblock, blobs, file tree; --verify checks every chunk')
  .option('--blobs <dir>', 'directory holding the data blobs, named by blob id')
  .option('--verify', 'read, decompress and check the digest of every chunk of every blob in --blobs')
  .option('--json', 'print JSON')
  .action(async (bootstrap: string, opts: { blobs?: string; verify?: boolean; json?: boolean }) => {
    process.exitCode = await inspect(bootstrap, opts);
  });

function fail(err: unknown): never {
  const e = err as Error & { code?: string };
  if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') process.exit(0);
  if (e.code?.startsWith('commander.')) process.exit(2);
  const known = e instanceof ConfigError || e instanceof FormatError || (e.code && /^E[A-Z]+$/.test(e.code));
  process.stderr.write(`lazysnap: ${known ? e.message : (e.stack ?? e.message)}\n`);
  process.exit(1);
}

program.parseAsync(process.argv).catch(fail);
