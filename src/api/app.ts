// The admin API's composition root: createApp builds the express app from the services it is
// given (no globals, nothing started here), so `serve` and the tests assemble it the same way.
// Public: /health, /ready, /.well-known/jwks.json and the dashboard's static files. Everything
// else needs an API key: /api/** (JSON, problem+json errors), /metrics, /admin/queues.
import { fileURLToPath } from 'node:url';
import express, { type Express, type RequestHandler } from 'express';
import type { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import type { SyncJobData } from '../../queues/sync.js';
import type { SubmissionJobData } from '../../queues/submissions.js';
import type { RunStore } from '../sync/run-store.js';
import type { Logger } from '../util/logger.js';
import type { Metrics } from '../util/metrics.js';
import { createAlertMonitor, type AlertMonitor } from '../alerts/alert-monitor.js';
import { authenticate, getCaller, requireRole } from './auth.js';
import { bullBoardHeaders, createBullBoardRouter } from './bull-board.js';
import { csrfGuard } from './csrf.js';
import type { ApiContext, CheckCentre } from './context.js';
import { handleErrors, notFoundHandler } from './error-middleware.js';
import { createFailureLimiter, type FailureLimiterOptions } from './rate-limit.js';
import { logRequests } from './request-log.js';
import { createAlertsRouter } from './routers/alerts-router.js';
import { createCentresRouter } from './routers/centres-router.js';
import { createProbesRouter, metricsHandler } from './routers/ops-router.js';
import { createRunsRouter } from './routers/runs-router.js';
import { createSubmissionsRouter } from './routers/submissions-router.js';
import { createFailedSubmissionStore } from './services/failed-submissions.js';

/** Where the dashboard's files are (beside this module, in src/ and in dist/). */
export const DASHBOARD_DIR = fileURLToPath(new URL('./dashboard/', import.meta.url));

/** The dashboard's Content-Security-Policy: its own files only, no inline code, no framing. */
export const DASHBOARD_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** What createApp is built from. */
export interface AppDeps {
  config: ServiceConfig;
  redis: Redis;
  /** BullMQ / key prefix the runtime uses. */
  prefix: string;
  queues: { sync: Queue<SyncJobData>; submissions: Queue<SubmissionJobData> };
  runStore: RunStore;
  centres: ReadonlyMap<string, CentreConfig>;
  metrics: Metrics;
  logger: Logger;
  /** The alert monitor; one is created (not started) when absent. */
  alerts?: AlertMonitor;
  /** Runs the onboarding check of a centre; POST /api/centres/:id/check answers 503 without it. */
  checkCentre?: CheckCentre;
  /** Serves GET /.well-known/jwks.json (the auth module's JWKS router). */
  jwks?: RequestHandler;
  /** Failed-authentication limiter settings (tests use small ones). */
  authLimit?: FailureLimiterOptions;
}

/** Builds the express app. Nothing listens until the caller does. */
export function createApp(deps: AppDeps): Express {
  const alerts =
    deps.alerts ??
    createAlertMonitor({
      redis: deps.redis,
      prefix: deps.prefix,
      centres: [...deps.centres.values()],
      runStore: deps.runStore,
      config: deps.config.alerts,
      metrics: deps.metrics,
      logger: deps.logger,
    });
  const ctx: ApiContext = {
    config: deps.config,
    redis: deps.redis,
    prefix: deps.prefix,
    queues: deps.queues,
    runStore: deps.runStore,
    centres: deps.centres,
    metrics: deps.metrics,
    logger: deps.logger,
    alerts,
    failedSubmissions: createFailedSubmissionStore({
      queue: deps.queues.submissions,
      redis: deps.redis,
      prefix: deps.prefix,
    }),
    ...(deps.checkCentre ? { checkCentre: deps.checkCentre } : {}),
  };
  const limiter = createFailureLimiter(deps.authLimit);
  const keys = deps.config.api.keys;
  const apiAuth = authenticate({ keys, limiter });

  const app = express();
  app.disable('x-powered-by');
  // Client addresses (auth-failure limiting, logs) from X-Forwarded-For only when configured.
  app.set('trust proxy', deps.config.api.trustProxy);
  app.use(setSecurityHeaders);
  app.use(logRequests(deps.logger));

  app.use(createProbesRouter(ctx));
  if (deps.jwks) app.use(deps.jwks);

  app.get('/dashboard', (_req, res) => res.redirect(301, '/'));
  app.use(
    express.static(DASHBOARD_DIR, {
      index: 'index.html',
      setHeaders: (res) => {
        res.setHeader('Content-Security-Policy', DASHBOARD_CSP);
        res.setHeader('Cache-Control', 'no-cache');
      },
    }),
  );

  app.get('/metrics', apiAuth, metricsHandler(ctx));

  app.use(
    '/admin/queues',
    bullBoardHeaders,
    authenticate({ keys, limiter, challenge: 'Basic' }),
    requireRole('operator'),
    createBullBoardRouter([deps.queues.sync, deps.queues.submissions], '/admin/queues'),
  );

  const api = express.Router();
  // Before auth and the JSON parser: a cross-site or non-JSON state change never gets further.
  api.use(csrfGuard({ publicUrl: deps.config.api.publicUrl }));
  api.use(apiAuth);
  api.use(express.json({ limit: '64kb' }));
  api.use((_req, res, next) => {
    res.setHeader('Cache-Control', 'no-store');
    next();
  });
  api.get('/me', (_req, res) => {
    res.json(getCaller(res));
  });
  api.use('/centres', createCentresRouter(ctx));
  api.use('/runs', createRunsRouter(ctx));
  api.use('/submissions', createSubmissionsRouter(ctx));
  api.use('/alerts', createAlertsRouter(ctx));
  app.use('/api', api);

  app.use(notFoundHandler());
  app.use(handleErrors(deps.logger));
  return app;
}

/** Headers every response carries. */
const setSecurityHeaders: RequestHandler = (_req, res, next) => {
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Frame-Options', 'DENY');
  next();
};
