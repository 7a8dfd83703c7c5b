// One failed sync is one failure: a sync outside the centre's sync window fails once (step
// `window`, saying when the window opens) and is not retried, and the `failing` alert counts
// sync jobs, not their attempts (a job retried twice used to raise it on its own).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAlertMonitor } from '../../src/alerts/alert-monitor.js';
import { parseServiceConfig } from '../../src/config/service.js';
import type { PrepareCentre } from '../../src/sync/centre-services.js';
import { findRunningSync, requestSync } from '../../src/sync/request-sync.js';
import { silentLogger } from '../../src/util/logger.js';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import { refusingClient, startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { SECRET, waitFor } from '../sync/helpers.js';

/** A one-hour window that starts 12 hours from now (in UTC): closed now. */
function closedWindow(): { start: string; end: string } {
  const hour = (new Date().getUTCHours() + 12) % 24;
  const hh = (h: number) => String(h).padStart(2, '0');
  return { start: `${hh(hour)}:00`, end: `${hh((hour + 1) % 24)}:00` };
}

describe('a sync outside its sync window', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    f = await startSyncFixture({
      patients: 2,
      centreId: 'window-closed',
      centre: {
        timeZone: 'UTC',
        limits: { maxConcurrentRequests: 16, requestsPerSecond: 1000, syncWindow: closedWindow() },
      },
    });
  });
  afterAll(async () => {
    await worker?.close();
    await f?.close();
  });

  it('when Sync now is clicked outside the window, then the run fails once at step window, saying when it opens, and is not retried', async () => {
    worker = await startWorker(f.runtime, { prepareCentre: f.prepareCentre });
    const deps = {
      redis: f.runtime.redis,
      prefix: f.runtime.prefix,
      syncQueue: f.runtime.queues.sync,
      runStore: f.runtime.runStore,
    };
    const ehrRequests = f.ehr.stats.requests;
    const queued = await requestSync(deps, f.centre.id, 'full');
    expect(queued.status).toBe('queued');
    const runId = queued.runId!;
    await waitFor(
      async () => (await f.runtime.runStore.get(runId))?.status === 'failed',
      20_000,
      'the run to fail',
    );
    const record = (await f.runtime.runStore.get(runId))!;
    expect(record.errors).toHaveLength(1);
    expect(record.errors[0]!.step).toBe('window');
    expect(record.errors[0]!.message).toMatch(
      /allows EHR requests only between \d\d:00 and \d\d:00 \(UTC\); the window opens next at \d{4}-\d\d-\d\dT.*not retried/,
    );
    const job = await f.runtime.queues.sync.getJob(record.jobId!);
    await waitFor(async () => (await job!.getState()) === 'failed', 10_000, 'the job to fail');
    const failed = (await f.runtime.queues.sync.getJob(record.jobId!))!;
    expect(failed.attemptsMade).toBe(1);
    // Nothing waits to retry: Sync now is not answered "already queued or running".
    expect(await findRunningSync(deps, f.centre.id)).toBeUndefined();
    expect((await f.runtime.runStore.list({ centreId: f.centre.id })).map((r) => r.runId)).toEqual([
      runId,
    ]);
    expect(f.ehr.stats.requests).toBe(ehrRequests);
  });
});

describe('the failing alert', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 2, centreId: 'fails-thrice' });
  });
  afterAll(async () => {
    await worker?.close();
    await f?.close();
  });

  it('when one sync fails all three attempts, then it counts as one failure; three failed syncs raise it', async () => {
    // Every EHR call fails: each attempt's run fails (with its run record).
    const prepareCentre: PrepareCentre = async (centre) => {
      const services = await f.prepareCentre(centre);
      return { ...services, fhirClient: refusingClient(services.fhirClient) };
    };
    worker = await startWorker(f.runtime, { prepareCentre });
    const monitor = createAlertMonitor({
      redis: f.runtime.redis,
      prefix: f.runtime.prefix,
      centres: [f.centre],
      runStore: f.runtime.runStore,
      config: parseServiceConfig({ pseudonymSecret: SECRET }).alerts,
      logger: silentLogger,
    });
    const failingAlerts = async () =>
      (await monitor.evaluate()).filter((a) => a.centreId === f.centre.id && a.kind === 'failing');

    // As the default job options, with a short backoff.
    const failOneSync = async () => {
      const job = await f.runtime.queues.sync.add(
        'sync',
        { centreId: f.centre.id, mode: 'full', reason: 'manual' },
        { attempts: 3, backoff: { type: 'fixed', delay: 50 } },
      );
      await waitFor(async () => (await job.getState()) === 'failed', 20_000, 'the job to fail');
      return String(job.id);
    };

    const first = await failOneSync();
    // The run history keeps every attempt, each failed (its record is finished by the attempt
    // itself; on a loaded machine the last write can land just after the job's state).
    await waitFor(
      async () => {
        const list = await f.runtime.runStore.list({ centreId: f.centre.id });
        return list.length === 3 && list.every((r) => r.status === 'failed');
      },
      10_000,
      'three failed run records',
    );
    const runs = await f.runtime.runStore.list({ centreId: f.centre.id });
    expect(runs.map((r) => [r.status, r.jobId])).toEqual([
      ['failed', first],
      ['failed', first],
      ['failed', first],
    ]);
    expect(await failingAlerts()).toEqual([]);

    await failOneSync();
    expect(await failingAlerts()).toEqual([]);
    const third = await failOneSync();
    const [alert] = await failingAlerts();
    expect(alert?.message).toMatch(/^the last 3 syncs failed/);
    expect(alert?.failedRunIds).toHaveLength(3);
    const newest = (await f.runtime.runStore.list({ centreId: f.centre.id, limit: 1 }))[0]!;
    expect(newest.jobId).toBe(third);
    expect(alert?.failedRunIds?.[0]).toBe(newest.runId);
    await monitor.stop();
  }, 60_000);
});
