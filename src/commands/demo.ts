// `lhn-bridge demo`: the whole job on an embedded default (see src/demo/run-demo.ts).
// `npm run demo` runs scripts/demo.js first, which installs dependencies and finds or
// starts a Redis, then calls this with --redis-url.
import { join } from 'node:path';
import type { Command } from 'commander';
import { runDemo } from '../demo/run-demo.js';
import { CliError } from './cli-error.js';

interface DemoCommandOptions {
  redisUrl: string;
  once?: boolean;
  patients: string;
  seed: string;
  port: string;
}

function positiveInt(value: string, name: string, allowZero = false): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < (allowZero ? 0 : 1))
    throw new CliError(
      `${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got "${value}"`,
    );
  return n;
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'run the whole job on an embedded default: sandbox EHR, sandbox registry, local Redis',
    )
    .option('--redis-url <url>', 'Redis to use', 'redis://127.0.0.1:6379')
    .option('--once', 'exit after the summary instead of keeping the dashboard up')
    .option('--patients <n>', 'patients in the generated centre', '300')
    .option('--seed <n>', 'generator seed', '2024')
    .option('--port <n>', 'API and dashboard port (a busy port falls back to a free one)', '8080')
    .action(async (options: DemoCommandOptions) => {
      try {
        await runDemo({
          redisUrl: options.redisUrl,
          once: options.once ?? false,
          patients: positiveInt(options.patients, '--patients'),
          seed: positiveInt(options.seed, '--seed', true),
          port: positiveInt(options.port, '--port', true),
          workDir: join(process.cwd(), '.demo', 'run'),
          out: process.stdout,
        });
      } catch (err) {
        if (err instanceof CliError) throw err;
        throw new CliError(`demo failed: ${(err as Error).message}`, 1);
      }
    });
}
