import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { evaluateCentreAlerts, resolveThresholds } from '../../src/alerts/evaluate-alerts.js';
import { createAlertMonitor, type AlertEvent } from '../../src/alerts/alert-monitor.js';
import { createRunStore, type RunStore } from '../../src/sync/run-store.js';
import { createMetrics } from '../../src/util/metrics.js';
import { silentLogger } from '../../src/util/logger.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { SECRET, deletePrefix, makeCentre, testPrefix, testRedis } from './helpers.js';
import { waitFor } from '../sync/helpers.js';

const HOUR = 3_600_000;

describe('alert rules', () => {
  const now = new Date('2026-03-10T12:00:00Z');
  const base = {
    centreId: 'alpha',
    thresholds: { staleAfterHours: 48, failuresInARow: 3 },
    firstSeenAt: '2026-03-01T00:00:00Z',
    now,
  };
  const run = (status: 'succeeded' | 'failed' | 'running', i: number) => ({
    runId: `r${i}`,
    status,
    errors: status === 'failed' ? [{ step: 'pull', message: `HTTP 503 from the EHR (${i})` }] : [],
  });

  it('when the last success is older than the threshold, then a stale alert is raised with its age', () => {
    const alerts = evaluateCentreAlerts({
      ...base,
      latestSuccess: { startedAt: '2026-03-07T11:00:00Z', endedAt: '2026-03-07T11:30:00Z' },
      recentRuns: [run('succeeded', 1)],
    });
    expect(alerts).toEqual([
      expect.objectContaining({
        kind: 'stale',
        threshold: 48,
        lastSuccessAt: '2026-03-07T11:30:00Z',
        message: expect.stringContaining('72 h'),
      }),
    ]);
  });

  it('when the last success is within the threshold, then nothing is raised', () => {
    expect(
      evaluateCentreAlerts({
        ...base,
        latestSuccess: { startedAt: '2026-03-09T11:00:00Z', endedAt: '2026-03-09T11:30:00Z' },
        recentRuns: [run('succeeded', 1)],
      }),
    ).toEqual([]);
  });

  it('when a centre never succeeded, then staleness counts from when lhn-bridge first saw it', () => {
    const fresh = evaluateCentreAlerts({
      ...base,
      firstSeenAt: '2026-03-10T00:00:00Z',
      recentRuns: [],
    });
    expect(fresh).toEqual([]);
    const old = evaluateCentreAlerts({ ...base, recentRuns: [] });
    expect(old.map((a) => a.kind)).toEqual(['stale']);
  });

  it('when the last N finished runs failed, then a failing alert names the runs and the latest error; a running run in between does not reset it', () => {
    const alerts = evaluateCentreAlerts({
      ...base,
      latestSuccess: { startedAt: '2026-03-10T06:00:00Z', endedAt: '2026-03-10T06:10:00Z' },
      recentRuns: [run('running', 9), run('failed', 8), run('failed', 7), run('failed', 6)],
    });
    expect(alerts).toEqual([
      expect.objectContaining({
        kind: 'failing',
        failedRunIds: ['r8', 'r7', 'r6'],
        message: expect.stringContaining('latest error at pull in run r8'),
      }),
    ]);
    // The error message itself stays out: alerts go to webhooks, messages may quote the EHR.
    expect(alerts[0]!.message).not.toContain('HTTP 503 from the EHR');
  });

  it('when fewer than N runs failed since a success, then no failing alert', () => {
    expect(
      evaluateCentreAlerts({
        ...base,
        latestSuccess: { startedAt: '2026-03-10T06:00:00Z', endedAt: '2026-03-10T06:10:00Z' },
        recentRuns: [run('failed', 3), run('failed', 2), run('succeeded', 1)],
      }),
    ).toEqual([]);
  });

  it('when a centre file sets its own thresholds, then they win over the service defaults', () => {
    const defaults = parseServiceConfig({ pseudonymSecret: SECRET }).alerts;
    expect(resolveThresholds(makeCentre('aa'), defaults)).toEqual({
      staleAfterHours: 48,
      failuresInARow: 3,
    });
    expect(
      resolveThresholds(makeCentre('bb', { alerts: { staleAfterHours: 6 } }), defaults),
    ).toEqual({ staleAfterHours: 6, failuresInARow: 3 });
  });
});

/** A loopback webhook receiver that records events and can be told to fail. */
async function startReceiver() {
  const events: AlertEvent[] = [];
  let attempts = 0;
  let status = 200;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      attempts += 1;
      if (status === 200) events.push(JSON.parse(Buffer.concat(chunks).toString()) as AlertEvent);
      res.writeHead(status).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/lhn`,
    events,
    attempts: () => attempts,
    setStatus: (s: number) => {
      status = s;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe('alert monitor over Redis with a webhook', () => {
  let redis: Redis;
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  let prefix: string;
  let runStore: RunStore;
  let clock: Date;
  const centre = makeCentre('alpha', { alerts: { staleAfterHours: 1, failuresInARow: 2 } });

  beforeAll(async () => {
    redis = testRedis();
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver.close();
    await redis.quit();
  });
  beforeEach(async () => {
    if (prefix) await deletePrefix(redis, prefix);
    prefix = testPrefix();
    runStore = createRunStore(redis, prefix);
    clock = new Date();
    receiver.events.length = 0;
    receiver.setStatus(200);
  });

  function monitor(
    options: {
      centres?: (typeof centre)[];
      metrics?: ReturnType<typeof createMetrics>;
      url?: string;
      maxAttempts?: number;
    } = {},
  ) {
    return createAlertMonitor({
      redis,
      prefix,
      centres: options.centres ?? [centre],
      runStore,
      config: parseServiceConfig({
        pseudonymSecret: SECRET,
        alerts: { webhookUrl: options.url ?? receiver.url },
      }).alerts,
      ...(options.metrics ? { metrics: options.metrics } : {}),
      ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
      flushLeaseMs: 600,
      logger: silentLogger,
      now: () => clock,
    });
  }

  async function finishRun(status: 'succeeded' | 'failed') {
    const run = await runStore.start({
      centreId: 'alpha',
      mode: 'incremental',
      reason: 'schedule',
    });
    await runStore.finish(run.runId, {
      status,
      ...(status === 'failed' ? { errors: [{ step: 'pull', message: 'EHR timed out' }] } : {}),
    });
    await new Promise((r) => setTimeout(r, 3));
  }

  it('when a centre fails N times and later goes stale, then each alert is posted once when raised and once when cleared', async () => {
    const metrics = createMetrics();
    const m = monitor({ metrics });
    expect(await m.evaluate()).toEqual([]);

    await finishRun('failed');
    await finishRun('failed');
    const raised = await m.evaluate();
    expect(raised.map((a) => a.kind)).toEqual(['failing']);
    expect(receiver.events.map((e) => [e.event, e.alert.kind])).toEqual([
      ['alert.raised', 'failing'],
    ]);
    expect(receiver.events[0]!.text).toContain('[alpha] failing');
    expect(receiver.events[0]!.alert.message).toContain('latest error at pull in run');
    expect(receiver.events[0]!.alert.message).not.toContain('EHR timed out');

    // Evaluating again changes nothing and posts nothing.
    await m.evaluate();
    await m.evaluate();
    expect(receiver.events).toHaveLength(1);

    clock = new Date(Date.now() + 2 * HOUR);
    expect((await m.evaluate()).map((a) => a.kind).sort()).toEqual(['failing', 'stale']);
    expect(receiver.events).toHaveLength(2);
    expect(await metrics.registry.getSingleMetricAsString('lhn_alerts_active')).toMatch(
      /lhn_alerts_active\{centre="alpha",kind="stale"\} 1/,
    );

    // The raise time stays the first one while the alert stays raised.
    const firstRaisedAt = (await m.list()).find((a) => a.kind === 'failing')!.raisedAt;
    await m.evaluate();
    expect((await m.list()).find((a) => a.kind === 'failing')!.raisedAt).toBe(firstRaisedAt);

    clock = new Date();
    await finishRun('succeeded');
    expect(await m.evaluate()).toEqual([]);
    expect(receiver.events.map((e) => [e.event, e.alert.kind])).toEqual([
      ['alert.raised', 'failing'],
      ['alert.raised', 'stale'],
      ['alert.cleared', 'stale'],
      ['alert.cleared', 'failing'],
    ]);
    expect(await metrics.registry.getSingleMetricAsString('lhn_alerts_active')).not.toContain(
      'centre="alpha"',
    );
    await m.evaluate();
    expect(receiver.events).toHaveLength(4);
  });

  it('when the webhook is down, then the event waits in the outbox and is delivered once when it is back', async () => {
    const m = monitor();
    receiver.setStatus(503);
    await finishRun('failed');
    await finishRun('failed');
    await m.evaluate();
    expect(receiver.attempts()).toBeGreaterThan(0);
    expect(receiver.events).toHaveLength(0);
    await m.evaluate();
    expect(receiver.events).toHaveLength(0);

    receiver.setStatus(200);
    await m.evaluate();
    expect(receiver.events.map((e) => e.event)).toEqual(['alert.raised']);
    await m.evaluate();
    expect(receiver.events).toHaveLength(1);
  });

  it('when two serve processes evaluate the same change at once, then the webhook hears of it once', async () => {
    const a = monitor();
    const b = monitor();
    await finishRun('failed');
    await finishRun('failed');
    await Promise.all([a.evaluate(), b.evaluate(), a.evaluate(), b.evaluate()]);
    await a.evaluate();
    expect(receiver.events.map((e) => e.event)).toEqual(['alert.raised']);
  });

  it('when a centre is removed from the configuration, then its alerts are cleared and announced', async () => {
    await finishRun('failed');
    await finishRun('failed');
    await monitor().evaluate();
    expect(await monitor({ centres: [] }).evaluate()).toEqual([]);
    expect(receiver.events.map((e) => e.event)).toEqual(['alert.raised', 'alert.cleared']);
    expect(receiver.events[1]!.alert.message).toContain('no longer configured');
  });

  it('when started on a timer, then it evaluates without being asked, and stops on stop()', async () => {
    const m = monitor();
    await finishRun('failed');
    await finishRun('failed');
    m.start(30);
    await waitFor(() => receiver.events.length === 1, 5_000, 'a timed evaluation');
    await m.stop();
    await finishRun('succeeded');
    await new Promise((r) => setTimeout(r, 150));
    expect(receiver.events).toHaveLength(1);
  });

  /** A webhook that answers each event with `answer(event)` (after `delayMs` if given). */
  async function startJudgingReceiver(
    answer: (event: AlertEvent, nth: number) => { status: number; delayMs?: number },
  ) {
    const delivered: AlertEvent[] = [];
    let nth = 0;
    const server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const event = JSON.parse(Buffer.concat(chunks).toString()) as AlertEvent;
        const { status, delayMs } = answer(event, nth++);
        setTimeout(() => {
          if (status < 300) delivered.push(event);
          res.writeHead(status).end();
        }, delayMs ?? 0);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
      delivered,
      requests: () => nth,
      close: () =>
        new Promise((resolve) => {
          server.closeAllConnections();
          server.close(resolve);
        }),
    };
  }

  it('when the serve process is killed while the webhook is answering, then the event stays in the outbox and the next flush delivers it once', async () => {
    let hang = true;
    const hook = await startJudgingReceiver(() => ({ status: 200 }));
    // While `hang` is set the webhook never answers (the request is left open).
    const hanging = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (hang) return;
        hook.delivered.push(JSON.parse(Buffer.concat(chunks).toString()) as AlertEvent);
        res.writeHead(200).end();
      });
    });
    let requests = 0;
    hanging.on('request', () => (requests += 1));
    await new Promise<void>((resolve) => hanging.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/hook`;
    try {
      await finishRun('failed');
      await finishRun('failed');
      const child = spawn(
        process.execPath,
        [
          '--import',
          'tsx',
          new URL('./alert-flush-child.ts', import.meta.url).pathname,
          prefix,
          url,
        ],
        { stdio: 'inherit' },
      );
      const exited = new Promise((resolve) => child.once('exit', resolve));
      await waitFor(() => requests > 0, 30_000, 'the child to post the event');
      child.kill('SIGKILL');
      await exited;
      expect(await redis.llen(`${prefix}:alerts:outbox`)).toBe(1);

      hang = false;
      const m = monitor({ url });
      // Until the dead process's flush lock lapses, nobody else flushes (order is kept)...
      await new Promise((r) => setTimeout(r, 700));
      await m.evaluate();
      await m.evaluate();
      expect(hook.delivered.map((e) => [e.event, e.alert.kind])).toEqual([
        ['alert.raised', 'failing'],
      ]);
      expect(await redis.llen(`${prefix}:alerts:outbox`)).toBe(0);
    } finally {
      hanging.closeAllConnections();
      await new Promise((resolve) => hanging.close(resolve));
      await hook.close();
    }
  });

  it('when the webhook refuses one event for good (4xx), then it is parked, logged and counted, and later events still go out', async () => {
    const hook = await startJudgingReceiver((e) => ({
      status: e.event === 'alert.raised' ? 422 : 200,
    }));
    const metrics = createMetrics();
    try {
      const m = monitor({ url: hook.url, metrics });
      await finishRun('failed');
      await finishRun('failed');
      await m.evaluate();
      await finishRun('succeeded');
      await m.evaluate();
      expect(hook.delivered.map((e) => e.event)).toEqual(['alert.cleared']);
      const parked = await redis.lrange(`${prefix}:alerts:parked`, 0, -1);
      expect(parked.map((t) => (JSON.parse(t) as AlertEvent).event)).toEqual(['alert.raised']);
      expect(await redis.llen(`${prefix}:alerts:outbox`)).toBe(0);
      expect(
        await metrics.registry.getSingleMetricAsString('lhn_alert_events_parked_total'),
      ).toMatch(/lhn_alert_events_parked_total\{reason="refused"\} 1/);
    } finally {
      await hook.close();
    }
  });

  it('when the webhook fails one event N times (5xx), then it is parked after the Nth and the next event goes out', async () => {
    const hook = await startJudgingReceiver((e) => ({
      status: e.event === 'alert.raised' ? 500 : 200,
    }));
    const metrics = createMetrics();
    try {
      const m = monitor({ url: hook.url, metrics, maxAttempts: 3 });
      await finishRun('failed');
      await finishRun('failed');
      await m.evaluate();
      await m.evaluate();
      expect(await redis.llen(`${prefix}:alerts:outbox`)).toBe(1);
      await finishRun('succeeded');
      await m.evaluate();
      expect(hook.delivered.map((e) => e.event)).toEqual(['alert.cleared']);
      expect(await redis.llen(`${prefix}:alerts:parked`)).toBe(1);
      expect(
        await metrics.registry.getSingleMetricAsString('lhn_alert_events_parked_total'),
      ).toMatch(/lhn_alert_events_parked_total\{reason="attempts"\} 1/);
    } finally {
      await hook.close();
    }
  });

  it('when two serve processes flush at once and the first post fails, then no later event overtakes it', async () => {
    // The first two posts fail (the second one slowly: it is in flight while the other
    // process flushes); every later one succeeds at once.
    const hook = await startJudgingReceiver((_e, nth) =>
      nth === 0 ? { status: 503 } : nth === 1 ? { status: 503, delayMs: 200 } : { status: 200 },
    );
    try {
      await finishRun('failed');
      await finishRun('failed');
      const a = monitor({ url: hook.url });
      const b = monitor({ url: hook.url });
      await a.evaluate();
      await finishRun('succeeded');
      // The raise failed and waits in the outbox; this evaluation queues the clear behind it
      // and posts the raise again, slowly, while the other process flushes too.
      const racing = a.evaluate();
      await new Promise((r) => setTimeout(r, 50));
      await Promise.all([racing, b.evaluate(), b.evaluate()]);
      await a.evaluate();
      await b.evaluate();
      expect(hook.delivered.map((e) => e.event)).toEqual(['alert.raised', 'alert.cleared']);
    } finally {
      await hook.close();
    }
  });
});
