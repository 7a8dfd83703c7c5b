// Placeholder until the `check` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerCheckCommand(program: Command): void {
  program
    .command('check')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the check command is not available yet', 1);
    });
}
