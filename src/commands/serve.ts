// `lhn-bridge serve`: the admin API, dashboard, metrics and alerts in one process. Reads the
// service config from the environment (and LHN_CONFIG), listens, and on SIGTERM / SIGINT
// stops taking requests, finishes the ones in flight and closes Redis before exiting.
import type { Command } from 'commander';
import { loadServiceConfig } from '../config/service.js';
import { startServer } from '../server.js';
import { STOP_SIGNALS } from '../util/abort.js';
import { CliError } from './cli-error.js';

interface ServeOptions {
  host?: string;
  port?: string;
  alertInterval: string;
}

/** Registers `serve` on the program. */
export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('run the admin API, dashboard, /metrics and alerts (stop with SIGTERM or Ctrl-C)')
    .option('--host <host>', 'listen address (default: api.host, LHN_API_HOST, 127.0.0.1)')
    .option('--port <port>', 'listen port (default: api.port, LHN_API_PORT, 8080)')
    .option('--alert-interval <seconds>', 'how often alerts are evaluated', '60')
    .action(async (opts: ServeOptions) => {
      const config = loadServiceConfig(process.env);
      if (opts.host) config.api.host = opts.host;
      if (opts.port !== undefined) {
        const port = Number(opts.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535)
          throw new CliError(`--port: expected a port number, got "${opts.port}"`);
        config.api.port = port;
      }
      const interval = Number(opts.alertInterval);
      if (!Number.isFinite(interval) || interval < 0)
        throw new CliError(`--alert-interval: expected seconds, got "${opts.alertInterval}"`);

      const server = await startServer(config, { alertIntervalMs: interval * 1000 });
      // On stderr: stdout carries the JSON logs, one object a line, for a log shipper.
      process.stderr.write(
        `lhn-bridge API listening on ${server.url} (dashboard: ${server.url}/)\n`,
      );
      await new Promise<void>((resolve) => {
        const stop = (signal: NodeJS.Signals) => {
          server.runtime.logger.info({ signal }, 'shutting down');
          for (const name of STOP_SIGNALS) process.off(name, stop);
          server.close().then(resolve, (err: unknown) => {
            server.runtime.logger.error({ err }, 'error while shutting down');
            process.exitCode = 1;
            resolve();
          });
        };
        for (const name of STOP_SIGNALS) process.on(name, stop);
      });
    });
}
