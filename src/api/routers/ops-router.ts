// Probes and metrics. /health says the process is up (liveness: no dependencies, so a Redis
// outage does not get the process restarted); /ready says it can serve (Redis answers PING).
// /metrics refreshes the queue-depth gauges, then renders the prom-client registry merged
// with the snapshots worker processes relay through Redis (see metrics-relay.ts).
import { Router, type RequestHandler } from 'express';
import type { ApiContext } from '../context.js';
import { readRelayedMetrics, renderMergedMetrics } from '../metrics-relay.js';
import { unavailableProblem } from '../problem.js';
import { getRequestLogger } from '../request-log.js';

const READY_TIMEOUT_MS = 2_000;

/** BullMQ states reported by the queue-depth gauge. */
const QUEUE_STATES = [
  'waiting',
  'active',
  'delayed',
  'prioritized',
  'failed',
  'completed',
] as const;

async function pingRedis(ctx: ApiContext): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out')), READY_TIMEOUT_MS);
  });
  try {
    const reply = await Promise.race([ctx.redis.ping(), timeout]);
    if (reply !== 'PONG') throw new Error(`unexpected reply ${String(reply)}`);
  } finally {
    clearTimeout(timer);
  }
}

/** The public probes: GET /health and GET /ready. */
export function createProbesRouter(ctx: ApiContext): Router {
  const router = Router();
  router.get('/health', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/ready', async (_req, res) => {
    try {
      await pingRedis(ctx);
    } catch (err) {
      // /ready is public: the client's error text (host, port, client internals) stays in
      // the log.
      (getRequestLogger(res) ?? ctx.logger).warn(
        { err: (err as Error).message },
        'readiness check failed: Redis is not answering',
      );
      throw unavailableProblem('Redis is not answering');
    }
    res.json({ status: 'ready', redis: 'ok' });
  });
  return router;
}

/** Refreshes the queue-depth gauges from BullMQ's counts. */
export async function updateQueueDepths(ctx: ApiContext): Promise<void> {
  for (const queue of [ctx.queues.sync, ctx.queues.submissions]) {
    const counts = await queue.getJobCounts(...QUEUE_STATES);
    for (const state of QUEUE_STATES)
      ctx.metrics.queueDepth.set({ queue: queue.name, state }, counts[state] ?? 0);
  }
}

/** GET /metrics in the Prometheus text format (authenticated), workers' metrics included. */
export function metricsHandler(ctx: ApiContext): RequestHandler {
  return async (_req, res) => {
    try {
      await updateQueueDepths(ctx);
    } catch (err) {
      // Still serve the other metrics; the gauges keep their last values.
      ctx.logger.warn({ err: (err as Error).message }, 'could not read queue depths for /metrics');
    }
    let relayed: Awaited<ReturnType<typeof readRelayedMetrics>> = [];
    try {
      relayed = await readRelayedMetrics(ctx.redis, ctx.prefix);
    } catch (err) {
      ctx.logger.warn({ err: (err as Error).message }, 'could not read worker metrics');
    }
    const { contentType, text } = await renderMergedMetrics(ctx.metrics.registry, relayed);
    res.type(contentType).send(text);
  };
}
