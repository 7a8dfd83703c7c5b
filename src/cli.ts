// The `lhn-bridge` command line. Each command lives in src/commands/<name>.ts and registers
// itself; this file only assembles them and turns errors into clear messages and exit codes.
import { Command, CommanderError } from 'commander';
import { registerMapCommand } from './commands/map.js';
import { registerKeysCommand } from './commands/keys.js';
import { registerCheckCommand } from './commands/check.js';
import { registerSyncCommand } from './commands/sync.js';
import { registerServeCommand } from './commands/serve.js';
import { registerWorkerCommand } from './commands/worker.js';
import { registerDemoCommand } from './commands/demo.js';
import { CliError } from './commands/cli-error.js';
import { ConfigError } from './config/errors.js';

export function buildProgram(): Command {
  const program = new Command()
    .name('lhn-bridge')
    .description(
      'EHR-to-registry bridge: SMART Backend Services pull, SQL-on-FHIR mapping, BullMQ submissions',
    )
    .exitOverride();
  registerMapCommand(program);
  registerKeysCommand(program);
  registerCheckCommand(program);
  registerSyncCommand(program);
  registerServeCommand(program);
  registerWorkerCommand(program);
  registerDemoCommand(program);
  return program;
}

async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
    } else if (err instanceof CliError || err instanceof ConfigError) {
      process.stderr.write(`lhn-bridge: ${err.message}\n`);
      process.exitCode = err instanceof CliError ? err.exitCode : 2;
    } else if ((err as Error).name === 'MaxRetriesPerRequestError') {
      // Redis went away after the command's start-up probe (src/commands/cli-runtime.ts).
      process.stderr.write(
        'lhn-bridge: lost the connection to Redis (it stopped answering); check LHN_REDIS_URL and that Redis is up\n',
      );
      process.exitCode = 1;
    } else {
      process.stderr.write(
        `lhn-bridge: unexpected error: ${(err as Error).message ?? String(err)}\n`,
      );
      process.exitCode = 1;
    }
  }
}

await main(process.argv);
