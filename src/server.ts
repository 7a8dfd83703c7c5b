// The API process: builds the runtime (Redis, queues, run store, centres), the alert
// monitor and the express app, and listens. close() undoes it in reverse order: stop taking
// requests, let the ones in flight finish, stop the alert timer, then close queues and Redis.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RequestHandler } from 'express';
import type { ServiceConfig } from './config/service.js';
import type { CentreConfig } from './config/centre.js';
import { createRuntime, type Runtime } from './runtime.js';
import { ensureSecretFingerprint, SecretMismatchError } from './sync/secret-fingerprint.js';
import type { Logger } from './util/logger.js';
import type { Metrics } from './util/metrics.js';
import { createAlertMonitor, type AlertMonitor } from './alerts/alert-monitor.js';
import { createApp } from './api/app.js';
import { createJwksRouter } from './auth/jwks-router.js';
import { runCheck } from './onboarding/check.js';
import type { CheckCentre } from './api/context.js';
import type { FailureLimiterOptions } from './api/rate-limit.js';

/** Options of startServer; tests pass a prefix, centres and port 0 through config. */
export interface StartServerOptions {
  /** Use this runtime instead of building one (it is then not closed by close()). */
  runtime?: Runtime;
  centres?: CentreConfig[];
  prefix?: string;
  logger?: Logger;
  metrics?: Metrics;
  /** How often alerts are evaluated; default 60 s. 0 turns the timer off. */
  alertIntervalMs?: number;
  /** Runs a centre's onboarding check; default: the onboarding module's runCheck. */
  checkCentre?: CheckCentre;
  /** Serves /.well-known/jwks.json; default: the JWKS router over config.keysDir. */
  jwks?: RequestHandler;
  authLimit?: FailureLimiterOptions;
  /** Grace period for requests in flight at close; default 10 s. */
  closeTimeoutMs?: number;
}

/** A running API server. */
export interface RunningServer {
  /** Base URL, e.g. http://127.0.0.1:8080 (the real port when config asked for 0). */
  url: string;
  runtime: Runtime;
  alerts: AlertMonitor;
  /** Stops listening, waits for requests in flight, closes what startServer opened. */
  close(): Promise<void>;
}

function listen(server: Server, port: number, host: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeHttp(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const force = setTimeout(() => server.closeAllConnections(), timeoutMs);
    force.unref();
    server.close(() => {
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Starts the API process on config.api.host / config.api.port. */
export async function startServer(
  config: ServiceConfig,
  options: StartServerOptions = {},
): Promise<RunningServer> {
  const ownRuntime = !options.runtime;
  const runtime =
    options.runtime ??
    (await createRuntime(config, {
      role: 'api',
      ...(options.centres ? { centres: options.centres } : {}),
      ...(options.prefix ? { prefix: options.prefix } : {}),
      ...(options.logger ? { logger: options.logger } : {}),
      ...(options.metrics ? { metrics: options.metrics } : {}),
    }));
  const { logger } = runtime;
  // Refuse to serve with another pseudonym secret than the one this Redis's state was made
  // with. Redis unreachable at start is no refusal (/ready says so); workers check again.
  try {
    await ensureSecretFingerprint(runtime.redis, runtime.prefix, config.pseudonymSecret);
  } catch (err) {
    if (err instanceof SecretMismatchError) {
      if (ownRuntime) await runtime.close();
      throw err;
    }
    logger.warn(
      { err: (err as Error).message },
      'could not compare the pseudonym secret with the one this Redis was used with',
    );
  }
  const alerts = createAlertMonitor({
    redis: runtime.redis,
    prefix: runtime.prefix,
    centres: [...runtime.centres.values()],
    runStore: runtime.runStore,
    config: config.alerts,
    metrics: runtime.metrics,
    logger,
    fetch: runtime.fetch,
  });
  // Anything that fails while the app is built must not leave Redis open (the process would
  // print its error and hang instead of exiting).
  let app: ReturnType<typeof createApp>;
  try {
    app = createApp({
      config,
      redis: runtime.redis,
      prefix: runtime.prefix,
      queues: runtime.queues,
      runStore: runtime.runStore,
      centres: runtime.centres,
      metrics: runtime.metrics,
      logger,
      alerts,
      checkCentre:
        options.checkCentre ??
        ((centre) =>
          runCheck(centre, {
            logger,
            fetch: runtime.fetch,
            keysDir: config.keysDir,
            mappingsDir: config.mappingsDir,
          })),
      jwks: options.jwks ?? createJwksRouter({ keysDir: config.keysDir, logger }),
      ...(options.authLimit ? { authLimit: options.authLimit } : {}),
    });
  } catch (err) {
    if (ownRuntime) await runtime.close();
    throw err;
  }
  const server = createServer(app);
  let address: AddressInfo;
  try {
    address = await listen(server, config.api.port, config.api.host);
  } catch (err) {
    if (ownRuntime) await runtime.close();
    throw err;
  }
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  const interval = options.alertIntervalMs ?? 60_000;
  if (interval > 0) alerts.start(interval);
  if (config.api.keys.length === 0)
    logger.warn('no API keys configured (api.keys / LHN_API_KEYS): only the probes will answer');
  logger.info({ url, centres: runtime.centres.size }, 'API listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    runtime,
    alerts,
    close() {
      closing ??= (async () => {
        await closeHttp(server, options.closeTimeoutMs ?? 10_000);
        await alerts.stop();
        if (ownRuntime) await runtime.close();
        logger.info('API stopped');
      })();
      return closing;
    },
  };
}
