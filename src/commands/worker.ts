// Placeholder until the `worker` command lands; it fails loudly rather than pretending.
import type { Command } from 'commander';
import { CliError } from './cli-error.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('(not available yet)')
    .allowUnknownOption()
    .action(() => {
      throw new CliError('the worker command is not available yet', 1);
    });
}
