// Raising or clearing an alert and queueing its webhook event are one step: a failure of
// Redis (OOM, a restart, a killed process) cannot leave an alert raised or cleared that the
// webhook never hears of (fault review 2, finding 5).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { createAlertMonitor, type AlertEvent } from '../../src/alerts/alert-monitor.js';
import { createRunStore } from '../../src/sync/run-store.js';
import { silentLogger } from '../../src/util/logger.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { SECRET, deletePrefix, makeCentre, testPrefix, testRedis } from '../api/helpers.js';

describe('alert transitions and their webhook events', () => {
  let redis: Redis;
  let server: Server;
  let url: string;
  const events: AlertEvent[] = [];
  const prefix = testPrefix();
  const centre = makeCentre('alpha', { alerts: { staleAfterHours: 1000, failuresInARow: 2 } });

  beforeAll(async () => {
    redis = testRedis();
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        events.push(JSON.parse(Buffer.concat(chunks).toString()) as AlertEvent);
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  afterAll(async () => {
    await deletePrefix(redis, prefix);
    await redis.quit();
    await new Promise((r) => server.close(r));
  });

  /** The connection, with the next command named `failing` refused once (as Redis OOM). */
  function flaky(): { conn: Redis; failNext: (command: string) => void } {
    const armed = new Set<string>();
    const conn = new Proxy(redis, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof prop === 'string' && typeof value === 'function')
          return (...args: unknown[]) => {
            if (armed.delete(prop))
              return Promise.reject(new Error('OOM command not allowed (simulated)'));
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        return value;
      },
    });
    return { conn, failNext: (command) => armed.add(command) };
  }

  it('when queueing the event fails right after the alert changed, then a later evaluation still announces it once', async () => {
    const runStore = createRunStore(redis, prefix);
    const { conn, failNext } = flaky();
    const monitor = createAlertMonitor({
      redis: conn,
      prefix,
      centres: [centre],
      runStore,
      config: parseServiceConfig({ pseudonymSecret: SECRET, alerts: { webhookUrl: url } }).alerts,
      flushLeaseMs: 600,
      logger: silentLogger,
    });
    for (let i = 0; i < 2; i++) {
      const run = await runStore.start({
        centreId: 'alpha',
        mode: 'incremental',
        reason: 'schedule',
      });
      await runStore.finish(run.runId, {
        status: 'failed',
        errors: [{ step: 'pull', message: 'x' }],
      });
    }
    // The step after the alert is recorded fails (the outbox push), or the one recording it.
    failNext('rpush');
    await monitor.evaluate().catch(() => undefined);
    failNext('eval');
    await monitor.evaluate().catch(() => undefined);
    for (let i = 0; i < 3; i++) await monitor.evaluate();
    expect(events.map((e) => [e.event, e.alert.kind])).toEqual([['alert.raised', 'failing']]);

    const ok = await runStore.start({ centreId: 'alpha', mode: 'incremental', reason: 'schedule' });
    await runStore.finish(ok.runId, { status: 'succeeded' });
    failNext('rpush');
    await monitor.evaluate().catch(() => undefined);
    for (let i = 0; i < 3; i++) await monitor.evaluate();
    expect(events.map((e) => [e.event, e.alert.kind])).toEqual([
      ['alert.raised', 'failing'],
      ['alert.cleared', 'failing'],
    ]);
    expect(await monitor.list()).toEqual([]);
  });
});
