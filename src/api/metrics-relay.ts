// One scrape for the whole deployment. Worker processes have no HTTP server, yet they hold
// most counters (FHIR requests, resources pulled, deliveries, sync runs). Each worker
// publishes a snapshot of its lhn_ metrics to a Redis hash every few seconds; the API's
// /metrics merges the fresh snapshots with its own registry (prom-client's aggregator sums
// series with the same labels), so Prometheus scrapes `serve` alone. A snapshot older than
// three intervals (a dead worker) is dropped; its counters then read as a reset, which
// Prometheus' rate() already handles.
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Logger } from '../util/logger.js';

type MetricsJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

interface Snapshot {
  /** Epoch ms the snapshot was taken. */
  at: number;
  /** How often its process publishes (ms); the snapshot expires after three of these. */
  intervalMs: number;
  metrics: MetricsJson;
}

/** The Redis hash holding one snapshot per process. */
export function metricsRelayKey(prefix: string): string {
  return `${prefix}:metrics:relay`;
}

/** Options of a publishing process (a worker). */
export interface MetricsPublisherOptions {
  redis: Redis;
  prefix: string;
  registry: Registry;
  /** Default: hostname, pid and a random suffix. */
  instanceId?: string;
  /** Default 10 s. */
  intervalMs?: number;
  logger?: Logger;
}

/** Publishes a process's metrics until stopped. */
export interface MetricsPublisher {
  instanceId: string;
  /** Publishes a snapshot at once. */
  publishNow(): Promise<void>;
  /** Stops publishing and removes this process's snapshot. */
  stop(): Promise<void>;
}

/** Starts publishing the registry's lhn_ metrics (on an unref'd timer, first one at once). */
export function startMetricsPublisher(options: MetricsPublisherOptions): MetricsPublisher {
  const key = metricsRelayKey(options.prefix);
  const instanceId =
    options.instanceId ?? `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const intervalMs = options.intervalMs ?? 10_000;
  let stopped = false;

  async function publishNow(): Promise<void> {
    const metrics = (await options.registry.getMetricsAsJSON()).filter((m) =>
      m.name.startsWith('lhn_'),
    );
    const snapshot: Snapshot = { at: Date.now(), intervalMs, metrics };
    if (!stopped) await options.redis.hset(key, instanceId, JSON.stringify(snapshot));
  }

  const tick = () => {
    publishNow().catch((err: unknown) =>
      options.logger?.warn({ err: (err as Error).message }, 'could not publish metrics'),
    );
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  timer.unref();

  return {
    instanceId,
    publishNow,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await options.redis.hdel(key, instanceId).catch(() => undefined);
    },
  };
}

/** Fresh snapshots from other processes (stale ones are deleted on the way). */
export async function readRelayedMetrics(
  redis: Redis,
  prefix: string,
  now = Date.now(),
): Promise<MetricsJson[]> {
  const key = metricsRelayKey(prefix);
  const all = await redis.hgetall(key);
  const fresh: MetricsJson[] = [];
  for (const [instance, text] of Object.entries(all)) {
    let snapshot: Snapshot | undefined;
    try {
      snapshot = JSON.parse(text) as Snapshot;
    } catch {
      snapshot = undefined;
    }
    if (!snapshot || now - snapshot.at > 3 * snapshot.intervalMs) {
      await redis.hdel(key, instance);
      continue;
    }
    fresh.push(snapshot.metrics);
  }
  return fresh;
}

/** Renders this process's registry merged with the relayed snapshots, in the text format. */
export async function renderMergedMetrics(
  own: Registry,
  relayed: MetricsJson[],
): Promise<{ contentType: string; text: string }> {
  if (relayed.length === 0) return { contentType: own.contentType, text: await own.metrics() };
  const merged = AggregatorRegistry.aggregate([await own.getMetricsAsJSON(), ...relayed]);
  return { contentType: own.contentType, text: await merged.metrics() };
}
