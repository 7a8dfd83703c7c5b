// Placeholder until the `map` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerMapCommand(program: Command): void {
  program
    .command('map')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the map command is not available yet', 1);
    });
}
