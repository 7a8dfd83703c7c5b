// Placeholder until the `demo` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the demo command is not available yet', 1);
    });
}
