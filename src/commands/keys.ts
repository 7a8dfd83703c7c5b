// Placeholder until the `keys` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerKeysCommand(program: Command): void {
  program
    .command('keys')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the keys command is not available yet', 1);
    });
}
