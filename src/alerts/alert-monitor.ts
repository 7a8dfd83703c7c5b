// Keeps the raised alerts in Redis and tells the outside world when they change. State lives
// in Redis (not in the process) so that any number of serve processes agree on what is
// raised, and each raise and each clear is announced once: the process whose HSETNX / HDEL
// changed the state queues the webhook event, and a Redis list is the outbox, so an event
// that cannot be delivered now is retried on the next evaluation rather than lost.
//
// The outbox is flushed by one process at a time (a short Redis lock with a random token,
// renewed while it flushes and released only by its holder), which reads the head event,
// posts it, and removes it only after a 2xx: a process that dies mid-post leaves the event at
// the head, and the next flusher (once the dead one's lock lapses) posts it again. Delivery is
// therefore in order and at least once. An event the webhook refuses for good (a 4xx other
// than 401, 403, 408, 429) or refuses `maxAttempts` times in a row is parked in
// `${prefix}:alerts:parked`, logged and counted, so it cannot hold back the events after it.
import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import { SYNC_ATTEMPTS, type RunStore } from '../sync/run-store.js';
import type { Logger } from '../util/logger.js';
import type { Metrics } from '../util/metrics.js';
import {
  ALERT_KINDS,
  evaluateCentreAlerts,
  resolveThresholds,
  type Alert,
  type AlertKind,
} from './evaluate-alerts.js';
import { isRedisUnavailable } from '../util/redis-errors.js';

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
  metrics?: Pick<Metrics, 'alertsActive'> & Partial<Pick<Metrics, 'alertEventsParked'>>;
  logger: Logger;
  fetch?: typeof fetch;
  now?: () => Date;
  /** Webhook request timeout; default 10 s. */
  webhookTimeoutMs?: number;
  /**
   * Lease of the outbox flush lock, renewed every third of it while flushing; after a crash
   * the outbox waits at most this long for the next flusher. Default 15 s.
   */
  flushLeaseMs?: number;
  /** Failed posts of one event (other than "unreachable") before it is parked; default 10. */
  maxAttempts?: number;
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

// Raises an alert and queues its event in one step (no failure between the two can leave an
// alert raised that the webhook never hears of). KEYS: active, outbox; ARGV: field, alert,
// event ('' without a webhook).
const RAISE = `if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[3]) end
return 1`;
// Clears an alert, if it is still the one read (ARGV[2]), and queues its event in one step.
// KEYS: active, outbox; ARGV: field, alert as read, event ('' without a webhook).
const CLEAR = `if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[3]) end
return 1`;

// Renew or release the flush lock only while it holds our token.
const RENEW_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const RELEASE_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;
// Removes the event from the head of the outbox if it is still there (after a 2xx, or to park
// it: then it is appended to the parked list, which keeps the newest ARGV[4]), and forgets its
// failure count. KEYS: outbox, failure counts, parked list.
const REMOVE_HEAD = `if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[1] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[2])
if ARGV[3] == '1' then
  redis.call('RPUSH', KEYS[3], ARGV[1])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[4]), -1)
end
return 1`;
/** Parked events kept (newest); older ones are trimmed. */
const KEEP_PARKED = 1000;

/** How one post went: delivered, refused for good, failed (counts), or unreachable. */
type PostOutcome =
  | { kind: 'delivered' }
  | { kind: 'permanent'; status: number }
  | { kind: 'failed'; reason: string }
  | { kind: 'unreachable' };

/** 4xx answers that say something about this event rather than about the webhook's state. */
function isPermanentRefusal(status: number): boolean {
  return status >= 400 && status < 500 && ![401, 403, 408, 429].includes(status);
}

function fieldOf(centreId: string, kind: AlertKind): string {
  return `${centreId}|${kind}`;
}

function describe(event: AlertEvent['event'], alert: Alert): string {
  const verb = event === 'alert.raised' ? 'ALERT' : 'RESOLVED';
  return `lhn-bridge ${verb} [${alert.centreId}] ${alert.kind}: ${alert.message}`;
}

/**
 * Why a webhook request failed, for the log: fetch's TypeError ("fetch failed") says nothing
 * by itself; its cause has the code (ECONNREFUSED, ENOTFOUND, UND_ERR_CONNECT_TIMEOUT...).
 * The URL's path and query (a Slack or Teams webhook's secret) are cut from the messages.
 */
export function failureCause(err: unknown, url: string): { code?: string; cause?: string } {
  const { origin, pathname } = new URL(url);
  const redact = (text: string) =>
    text
      .split(url)
      .join(origin)
      .split(pathname.length > 1 ? pathname : url)
      .join('/[path]')
      .replace(/https?:\/\/[^\s'"]+/g, (u) => {
        try {
          return new URL(u).origin;
        } catch {
          return '[url]';
        }
      });
  const cause = (err as { cause?: unknown }).cause;
  const source = (cause instanceof Error ? cause : err) as Error & { code?: unknown };
  const code = typeof source.code === 'string' ? source.code : undefined;
  // A connection to a name with several addresses fails with an AggregateError (no message).
  const inner = (source as { errors?: unknown }).errors;
  const text =
    source.message || (Array.isArray(inner) && inner[0] instanceof Error ? inner[0].message : '');
  const message = typeof text === 'string' ? redact(text).slice(0, 200) : '';
  return { ...(code ? { code } : {}), ...(message ? { cause: message } : {}) };
}

/** Creates an alert monitor. */
export function createAlertMonitor(options: AlertMonitorOptions): AlertMonitor {
  const { redis, logger } = options;
  const activeKey = `${options.prefix}:alerts:active`;
  const firstSeenKey = `${options.prefix}:alerts:first-seen`;
  const outboxKey = `${options.prefix}:alerts:outbox`;
  const flushLockKey = `${options.prefix}:alerts:outbox-lock`;
  const failuresKey = `${options.prefix}:alerts:outbox-failures`;
  const parkedKey = `${options.prefix}:alerts:parked`;
  const flushLeaseMs = options.flushLeaseMs ?? 15_000;
  const maxAttempts = options.maxAttempts ?? 10;
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

  /** The outbox entry of an event ('' when no webhook is configured). */
  function eventText(event: AlertEvent['event'], alert: Alert): string {
    if (!webhookUrl) return '';
    const payload: AlertEvent = {
      event,
      at: now().toISOString(),
      alert,
      text: describe(event, alert),
      source: 'lhn-bridge',
    };
    return JSON.stringify(payload);
  }

  function logEvent(event: AlertEvent['event'], alert: Alert): void {
    logger.warn(
      { centreId: alert.centreId, kind: alert.kind, event },
      event === 'alert.raised' ? 'alert raised' : 'alert cleared',
    );
  }

  /** Raises an alert and queues its event atomically; false if it was raised already. */
  async function raise(field: string, alert: Alert): Promise<boolean> {
    const text = JSON.stringify(alert);
    const done = await redis.eval(
      RAISE,
      2,
      activeKey,
      outboxKey,
      field,
      text,
      eventText('alert.raised', alert),
    );
    if (done === 1) logEvent('alert.raised', alert);
    return done === 1;
  }

  /** Clears the alert read as `previous` and queues its event (about `announced`) atomically. */
  async function clear(field: string, previous: string, announced: Alert): Promise<void> {
    const done = await redis.eval(
      CLEAR,
      2,
      activeKey,
      outboxKey,
      field,
      previous,
      eventText('alert.cleared', announced),
    );
    if (done === 1) logEvent('alert.cleared', announced);
  }

  async function postEvent(url: string, text: string): Promise<PostOutcome> {
    const webhook = new URL(url).origin;
    try {
      const response = await doFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: text,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body?.cancel();
      if (response.ok) return { kind: 'delivered' };
      if (isPermanentRefusal(response.status))
        return { kind: 'permanent', status: response.status };
      logger.warn(
        { webhook, status: response.status },
        'alert webhook refused the event; will retry at the next evaluation',
      );
      return { kind: 'failed', reason: `HTTP ${response.status}` };
    } catch (err) {
      const name = (err as Error).name;
      logger.warn(
        { webhook, error: name, ...failureCause(err, url) },
        'alert webhook unreachable; will retry at the next evaluation',
      );
      // A timeout may be this event's doing; a refused connection or DNS failure is not.
      return name === 'TimeoutError' || name === 'AbortError'
        ? { kind: 'failed', reason: 'timeout' }
        : { kind: 'unreachable' };
    }
  }

  async function removeHead(text: string, field: string, park: boolean): Promise<void> {
    await redis.eval(
      REMOVE_HEAD,
      3,
      outboxKey,
      failuresKey,
      parkedKey,
      text,
      field,
      park ? '1' : '0',
      KEEP_PARKED,
    );
  }

  async function parkEvent(text: string, field: string, reason: string): Promise<void> {
    await removeHead(text, field, true);
    let summary: Record<string, unknown> = {};
    try {
      const event = JSON.parse(text) as AlertEvent;
      summary = { event: event.event, centreId: event.alert.centreId, kind: event.alert.kind };
    } catch {
      // Not JSON (written by something else): park it all the same.
    }
    logger.error(
      { ...summary, reason, parkedKey },
      'alert webhook will not take this event; parked it so later events go out',
    );
    options.metrics?.alertEventsParked?.inc({
      reason: reason.startsWith('HTTP 4') ? 'refused' : 'attempts',
    });
  }

  /** Posts one event from the head of the outbox; true to go on with the next one. */
  async function flushHead(url: string): Promise<boolean> {
    const text = await redis.lindex(outboxKey, 0);
    if (text === null) return false;
    const field = createHash('sha256').update(text).digest('hex');
    const outcome = await postEvent(url, text);
    switch (outcome.kind) {
      case 'delivered':
        await removeHead(text, field, false);
        return true;
      case 'permanent':
        await parkEvent(text, field, `HTTP ${outcome.status}`);
        return true;
      case 'failed': {
        const failures = await redis.hincrby(failuresKey, field, 1);
        if (failures < maxAttempts) return false;
        await parkEvent(text, field, `${outcome.reason}, ${failures} attempts`);
        return true;
      }
      case 'unreachable':
        return false;
    }
  }

  async function flushOutbox(): Promise<void> {
    if (!webhookUrl) return;
    // One flusher at a time across every serve process, so events go out in order.
    const token = randomUUID();
    if ((await redis.set(flushLockKey, token, 'PX', flushLeaseMs, 'NX')) !== 'OK') return;
    let held = true;
    const renew = setInterval(
      () => {
        redis
          .eval(RENEW_LOCK, 1, flushLockKey, token, flushLeaseMs)
          .then((ok) => {
            if (ok !== 1) held = false;
          })
          .catch(() => undefined);
      },
      Math.max(Math.floor(flushLeaseMs / 3), 20),
    );
    renew.unref();
    try {
      for (let i = 0; i < 1000 && held; i++) if (!(await flushHead(webhookUrl))) return;
    } finally {
      clearInterval(renew);
      await redis.eval(RELEASE_LOCK, 1, flushLockKey, token);
    }
  }

  async function evaluateCentre(centre: CentreConfig, at: Date): Promise<void> {
    await redis.hsetnx(firstSeenKey, centre.id, at.toISOString());
    const thresholds = resolveThresholds(centre, options.config);
    const [firstSeenAt, latestSuccess, recentRuns] = await Promise.all([
      redis.hget(firstSeenKey, centre.id),
      options.runStore.latestSuccess(centre.id),
      // Each job may have up to SYNC_ATTEMPTS runs; it counts once.
      options.runStore.list({
        centreId: centre.id,
        limit: thresholds.failuresInARow * SYNC_ATTEMPTS + 10,
      }),
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
        if (!(await raise(field, alert)))
          await redis.eval(UPDATE_IF_RAISED, 1, activeKey, field, JSON.stringify(alert));
      } else {
        const previous = await redis.hget(activeKey, field);
        if (previous !== null) await clear(field, previous, JSON.parse(previous) as Alert);
      }
    }
  }

  async function clearRemovedCentres(): Promise<void> {
    const known = new Set(options.centres.map((c) => c.id));
    const all = await redis.hgetall(activeKey);
    for (const [field, text] of Object.entries(all)) {
      const alert = JSON.parse(text) as Alert;
      if (known.has(alert.centreId)) continue;
      await clear(field, text, {
        ...alert,
        message: `${alert.message} (cleared: the centre is no longer configured)`,
      });
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
        evaluate().catch((err: unknown) => {
          // Redis down is an outage the connection already reports, not a bug: no stack.
          if (isRedisUnavailable(err))
            logger.warn(
              { err: (err as Error).message },
              'alert evaluation skipped: Redis is not reachable; will try again',
            );
          else logger.error({ err }, 'alert evaluation failed; will try again');
        });
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
