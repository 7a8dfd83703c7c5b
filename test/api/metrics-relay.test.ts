import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import {
  metricsRelayKey,
  readRelayedMetrics,
  startMetricsPublisher,
} from '../../src/api/metrics-relay.js';
import { createMetrics } from '../../src/util/metrics.js';
import { call, startTestApi, testRedis, type TestApi } from './helpers.js';

async function scrape(api: TestApi): Promise<string> {
  const res = await call<string>(`${api.url}/metrics`, { key: api.keys.viewer });
  expect(res.status).toBe(200);
  return res.body;
}

describe('worker metrics relayed through Redis', () => {
  let api: TestApi;
  let redis: Redis;

  beforeAll(async () => {
    api = await startTestApi();
    redis = testRedis();
  });
  afterAll(async () => {
    await redis.quit();
    await api.close();
  });

  it('when two workers publish counters, then one scrape of the API shows their sums next to its own gauges', async () => {
    const workerA = createMetrics();
    const workerB = createMetrics();
    const labels = { centre: 'alpha', resource_type: 'Observation', status: '200' };
    workerA.fhirRequests.inc(labels, 5);
    workerB.fhirRequests.inc(labels, 3);
    workerB.syncRuns.inc({ centre: 'alpha', outcome: 'succeeded' });
    workerA.fhirRequestSeconds.observe({ centre: 'alpha', resource_type: 'Observation' }, 0.2);
    workerB.fhirRequestSeconds.observe({ centre: 'alpha', resource_type: 'Observation' }, 0.3);
    const a = startMetricsPublisher({ redis, prefix: api.prefix, registry: workerA.registry });
    const b = startMetricsPublisher({ redis, prefix: api.prefix, registry: workerB.registry });
    await a.publishNow();
    await b.publishNow();

    const text = await scrape(api);
    expect(text).toContain(
      'lhn_fhir_requests_total{centre="alpha",resource_type="Observation",status="200"} 8',
    );
    expect(text).toContain('lhn_sync_runs_total{centre="alpha",outcome="succeeded"} 1');
    expect(text).toContain(
      'lhn_fhir_request_duration_seconds_count{centre="alpha",resource_type="Observation"} 2',
    );
    // The API's own gauges are still there, once.
    expect(text.match(/# TYPE lhn_queue_jobs gauge/g)).toHaveLength(1);
    expect(text).toMatch(/lhn_queue_jobs\{queue="sync",state="waiting"\} 0/);

    await b.stop();
    expect(await scrape(api)).toContain(
      'lhn_fhir_requests_total{centre="alpha",resource_type="Observation",status="200"} 5',
    );
    await a.stop();
    expect(await scrape(api)).not.toContain('centre="alpha",resource_type="Observation"');
  });

  it('when a worker stops publishing without saying so, then its snapshot expires and is removed', async () => {
    const worker = createMetrics();
    worker.resourcesPulled.inc({ centre: 'beta', resource_type: 'Patient' }, 7);
    const publisher = startMetricsPublisher({
      redis,
      prefix: api.prefix,
      registry: worker.registry,
      intervalMs: 1000,
    });
    await publisher.publishNow();
    expect(await readRelayedMetrics(redis, api.prefix)).toHaveLength(1);
    // Three intervals later, as if the process had died.
    expect(await readRelayedMetrics(redis, api.prefix, Date.now() + 3_500)).toHaveLength(0);
    expect(await redis.hlen(metricsRelayKey(api.prefix))).toBe(0);
    await publisher.stop();
  });
});
