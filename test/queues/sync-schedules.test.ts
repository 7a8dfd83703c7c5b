import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { SCHEDULER_PREFIX, syncCentreSchedules } from '../../src/sync/schedules.js';
import { SYNC_QUEUE, type SyncJobData } from '../../queues/sync.js';
import { deletePrefix, testPrefix, testRedis } from '../sync/helpers.js';
import { createCapturingLogger } from '../fhir/helpers.js';

function centre(
  id: string,
  schedule: Record<string, unknown>,
  timeZone = 'America/Chicago',
): CentreConfig {
  return parseCentre(
    {
      id,
      name: id,
      timeZone,
      fhir: { baseUrl: 'https://ehr.example/fhir' },
      auth: { clientId: 'c', privateKeyFile: 'k.json', kid: 'k1' },
      cohort: { group: 'g' },
      schedule,
    },
    `/tmp/${id}.yaml`,
  );
}

describe('centre sync schedules', () => {
  let redis: Redis;
  let queue: Queue<SyncJobData>;
  const prefix = testPrefix();
  beforeAll(() => {
    redis = testRedis();
    queue = new Queue<SyncJobData>(SYNC_QUEUE, { connection: redis, prefix });
  });
  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  const schedulers = async () =>
    Object.fromEntries(
      (await queue.getJobSchedulers(0, -1))
        .filter((s) => s.key.startsWith(SCHEDULER_PREFIX))
        .map((s) => [s.key, { pattern: s.pattern, tz: s.tz, data: s.template?.data }]),
    );

  it('when centres with a cron start, then each gets one scheduler with its cron, zone and mode', async () => {
    const changes = await syncCentreSchedules(queue, [
      centre('alpha', { cron: '0 2 * * *', mode: 'incremental' }),
      centre('beta', { cron: '30 3 * * 0', mode: 'full' }, 'Europe/London'),
      centre('manual-only', {}),
    ]);
    expect(changes.added.sort()).toEqual(['alpha', 'beta']);
    expect(await schedulers()).toEqual({
      'sync-alpha': {
        pattern: '0 2 * * *',
        tz: 'America/Chicago',
        data: { centreId: 'alpha', mode: 'incremental', reason: 'schedule' },
      },
      'sync-beta': {
        pattern: '30 3 * * 0',
        tz: 'Europe/London',
        data: { centreId: 'beta', mode: 'full', reason: 'schedule' },
      },
    });
    // The next run of each is waiting as a delayed job.
    const delayed = await queue.getDelayed();
    expect(delayed.map((j) => j.data.centreId).sort()).toEqual(['alpha', 'beta']);
  });

  it('when the same centres start again, then nothing changes', async () => {
    const changes = await syncCentreSchedules(queue, [
      centre('alpha', { cron: '0 2 * * *', mode: 'incremental' }),
      centre('beta', { cron: '30 3 * * 0', mode: 'full' }, 'Europe/London'),
    ]);
    expect(changes).toEqual({ added: [], updated: [], removed: [], unchanged: ['alpha', 'beta'] });
  });

  it('when a cron changes, a centre is removed and one is added, then the schedulers follow', async () => {
    const changes = await syncCentreSchedules(queue, [
      centre('alpha', { cron: '15 1 * * *', mode: 'incremental' }),
      centre('gamma', { cron: '0 4 * * *' }),
    ]);
    expect(changes).toEqual({
      added: ['gamma'],
      updated: ['alpha'],
      removed: ['beta'],
      unchanged: [],
    });
    const now = await schedulers();
    expect(Object.keys(now).sort()).toEqual(['sync-alpha', 'sync-gamma']);
    expect(now['sync-alpha']!.pattern).toBe('15 1 * * *');
    const delayed = await queue.getDelayed();
    expect(delayed.map((j) => j.data.centreId).sort()).toEqual(['alpha', 'gamma']);
  });

  it('when a centre loses its cron, then its scheduler is removed', async () => {
    const changes = await syncCentreSchedules(queue, [
      centre('alpha', {}),
      centre('gamma', { cron: '0 4 * * *' }),
    ]);
    expect(changes.removed).toEqual(['alpha']);
    expect(Object.keys(await schedulers())).toEqual(['sync-gamma']);
  });
});

describe('centre sync schedules when a worker loads no centre', () => {
  let redis: Redis;
  let queue: Queue<SyncJobData>;
  const prefix = testPrefix();
  beforeAll(() => {
    redis = testRedis();
    queue = new Queue<SyncJobData>(SYNC_QUEUE, { connection: redis, prefix });
  });
  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  const keys = async () =>
    (await queue.getJobSchedulers(0, -1))
      .map((s) => s.key)
      .filter((k) => k.startsWith(SCHEDULER_PREFIX))
      .sort();

  it('when a worker starts with 0 centres (an empty or unmounted folder), then every schedule is left alone, with a warning', async () => {
    await syncCentreSchedules(
      queue,
      ['c1', 'c2', 'c3'].map((id) => centre(id, { cron: '0 2 * * *' })),
    );
    const { logger, lines } = createCapturingLogger();
    const changes = await syncCentreSchedules(queue, [], { logger });
    expect(changes).toEqual({
      added: [],
      updated: [],
      removed: [],
      unchanged: ['c1', 'c2', 'c3'],
    });
    expect(await keys()).toEqual(['sync-c1', 'sync-c2', 'sync-c3']);
    const warning = lines.map((l) => JSON.parse(l)).find((l) => /no centres loaded/.test(l.msg));
    expect(warning).toMatchObject({ level: 40, schedules: 3 });
  });

  it('when a schedule is removed, then each removal is logged at warn with the centre id', async () => {
    const { logger, lines } = createCapturingLogger();
    const changes = await syncCentreSchedules(queue, [centre('c1', { cron: '0 2 * * *' })], {
      logger,
    });
    expect(changes.removed.sort()).toEqual(['c2', 'c3']);
    const removals = lines
      .map((l) => JSON.parse(l))
      .filter((l) => /removed the sync schedule/.test(l.msg));
    expect(removals.map((l) => [l.level, l.centreId]).sort()).toEqual([
      [40, 'c2'],
      [40, 'c3'],
    ]);
  });
});
