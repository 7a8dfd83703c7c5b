// Keeps the raised alerts in Redis and tells the outside world when they change. State lives
// in Redis (not in the process) so that any number of serve processes agree on what is
// raised, and each raise and each clear is announced once: the process whose HSETNX / HDEL
// changed the state queues the webhook event, and a Redis list is the outbox, so an event
// that cannot be delivered now is retried on the next evaluation rather than lost.
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import type { RunStore } from '../sync/run-store.js';
import type { Logger } from '../util/logger.js';
import type { Metrics } from '../util/metrics.js';
import {
  ALERT_KINDS,
  evaluateCentreAlerts,
  resolveThresholds,
  type Alert,
  type AlertKind,
} from './evaluate-alerts.js';

/** What the webhook receives, as JSON, once per raise and once per clear. */
export interface AlertEvent {
  event: 'alert.raised' | 'alert.cleared';
  /** ISO time of the change. */
  at: string;
  alert: Alert;
  /** A one-line summary (also makes Slack / Teams style incoming webhooks readable). */
  text: string;
  source: 'lhn-bridge';
}

/** Options of the alert monitor. */
export interface AlertMonitorOptions {
  redis: Redis;
  /** Key prefix (the service's redis.prefix); keys live under `${prefix}:alerts:`. */
  prefix: string;
  centres: readonly CentreConfig[];
  runStore: Pick<RunStore, 'list' | 'latestSuccess'>;
  config: ServiceConfig['alerts'];
  metrics?: Pick<Metrics, 'alertsActive'>;
  logger: Logger;
  fetch?: typeof fetch;
  now?: () => Date;
  /** Webhook request timeout; default 10 s. */
  webhookTimeoutMs?: number;
}

/** Evaluates alerts, remembers them and announces changes. */
export interface AlertMonitor {
  /** Runs the rules for every centre now; returns the alerts raised afterwards. */
  evaluate(): Promise<Alert[]>;
  /** The alerts currently raised (as of the last evaluation by any process). */
  list(): Promise<Alert[]>;
  /** Evaluates every `intervalMs` (first run at once) on an unref'd timer. */
  start(intervalMs: number): void;
  /** Stops the timer and waits for an evaluation in progress. */
  stop(): Promise<void>;
}

// Updates a raised alert's text while keeping its raisedAt, only if it is still raised (so a
// concurrent clear by another process is not undone without an announcement).
const UPDATE_IF_RAISED = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  local current = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1]))
  local next = cjson.decode(ARGV[2])
  next['raisedAt'] = current['raisedAt']
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(next))
  return 1
end
return 0`;

function fieldOf(centreId: string, kind: AlertKind): string {
  return `${centreId}|${kind}`;
}

function describe(event: AlertEvent['event'], alert: Alert): string {
  const verb = event === 'alert.raised' ? 'ALERT' : 'RESOLVED';
  return `lhn-bridge ${verb} [${alert.centreId}] ${alert.kind}: ${alert.message}`;
}

/** Creates an alert monitor. */
export function createAlertMonitor(options: AlertMonitorOptions): AlertMonitor {
  const { redis, logger } = options;
  const activeKey = `${options.prefix}:alerts:active`;
  const firstSeenKey = `${options.prefix}:alerts:first-seen`;
  const outboxKey = `${options.prefix}:alerts:outbox`;
  const now = options.now ?? (() => new Date());
  const doFetch = options.fetch ?? fetch;
  const webhookUrl = options.config.webhookUrl;
  const timeoutMs = options.webhookTimeoutMs ?? 10_000;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<Alert[]> | undefined;

  async function list(): Promise<Alert[]> {
    const all = await redis.hgetall(activeKey);
    return Object.values(all)
      .map((text) => JSON.parse(text) as Alert)
      .sort((a, b) => a.centreId.localeCompare(b.centreId) || a.kind.localeCompare(b.kind));
  }

  async function queueEvent(event: AlertEvent['event'], alert: Alert): Promise<void> {
    logger.warn(
      { centreId: alert.centreId, kind: alert.kind, event },
      event === 'alert.raised' ? 'alert raised' : 'alert cleared',
    );
    if (!webhookUrl) return;
    const payload: AlertEvent = {
      event,
      at: now().toISOString(),
      alert,
      text: describe(event, alert),
      source: 'lhn-bridge',
    };
    await redis.rpush(outboxKey, JSON.stringify(payload));
  }

  async function postEvent(url: string, text: string): Promise<boolean> {
    try {
      const response = await doFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: text,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      if (response.ok) return true;
      logger.warn(
        { webhook: new URL(url).origin, status: response.status },
        'alert webhook refused the event; will retry at the next evaluation',
      );
    } catch (err) {
      logger.warn(
        { webhook: new URL(url).origin, error: (err as Error).name },
        'alert webhook unreachable; will retry at the next evaluation',
      );
    }
    return false;
  }

  async function flushOutbox(): Promise<void> {
    if (!webhookUrl) return;
    for (let i = 0; i < 1000; i++) {
      const text = await redis.lpop(outboxKey);
      if (text === null) return;
      if (!(await postEvent(webhookUrl, text))) {
        // Put it back at the head so events stay in order; try again next time.
        await redis.lpush(outboxKey, text);
        return;
      }
    }
  }

  async function evaluateCentre(centre: CentreConfig, at: Date): Promise<void> {
    await redis.hsetnx(firstSeenKey, centre.id, at.toISOString());
    const thresholds = resolveThresholds(centre, options.config);
    const [firstSeenAt, latestSuccess, recentRuns] = await Promise.all([
      redis.hget(firstSeenKey, centre.id),
      options.runStore.latestSuccess(centre.id),
      options.runStore.list({ centreId: centre.id, limit: thresholds.failuresInARow + 10 }),
    ]);
    const raised = evaluateCentreAlerts({
      centreId: centre.id,
      thresholds,
      ...(latestSuccess ? { latestSuccess } : {}),
      firstSeenAt: firstSeenAt ?? at.toISOString(),
      recentRuns,
      now: at,
    });
    for (const kind of ALERT_KINDS) {
      const field = fieldOf(centre.id, kind);
      const alert = raised.find((a) => a.kind === kind);
      if (alert) {
        const text = JSON.stringify(alert);
        if ((await redis.hsetnx(activeKey, field, text)) === 1) {
          await queueEvent('alert.raised', alert);
        } else {
          await redis.eval(UPDATE_IF_RAISED, 1, activeKey, field, text);
        }
      } else {
        const previous = await redis.hget(activeKey, field);
        if (previous !== null && (await redis.hdel(activeKey, field)) === 1) {
          await queueEvent('alert.cleared', JSON.parse(previous) as Alert);
        }
      }
    }
  }

  async function clearRemovedCentres(): Promise<void> {
    const known = new Set(options.centres.map((c) => c.id));
    const all = await redis.hgetall(activeKey);
    for (const [field, text] of Object.entries(all)) {
      const alert = JSON.parse(text) as Alert;
      if (known.has(alert.centreId)) continue;
      if ((await redis.hdel(activeKey, field)) === 1) {
        await queueEvent('alert.cleared', {
          ...alert,
          message: `${alert.message} (cleared: the centre is no longer configured)`,
        });
      }
    }
  }

  async function runEvaluation(): Promise<Alert[]> {
    const at = now();
    for (const centre of options.centres) await evaluateCentre(centre, at);
    await clearRemovedCentres();
    const active = await list();
    if (options.metrics) {
      options.metrics.alertsActive.reset();
      for (const alert of active)
        options.metrics.alertsActive.set({ centre: alert.centreId, kind: alert.kind }, 1);
    }
    await flushOutbox();
    return active;
  }

  function evaluate(): Promise<Alert[]> {
    // One evaluation at a time per process; callers during one share its result.
    inFlight ??= runEvaluation().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  }

  return {
    evaluate,
    list,
    start(intervalMs) {
      if (timer) return;
      const tick = () => {
        evaluate().catch((err: unknown) =>
          logger.error({ err }, 'alert evaluation failed; will try again'),
        );
      };
      tick();
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await inFlight?.catch(() => undefined);
    },
  };
}
