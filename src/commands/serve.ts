// Placeholder until the `serve` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the serve command is not available yet', 1);
    });
}
