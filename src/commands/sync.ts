// Placeholder until the `sync` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerSyncCommand(program: Command): void {
  program
    .command('sync')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the sync command is not available yet', 1);
    });
}
