// Pseudonym secret mismatch (fault review 3, finding 2): this Redis remembers a fingerprint
// of the secret its state was made with; a sync run, a worker start and a serve start with
// another secret refuse instead of re-keying every visit and dropping every change. And a
// retraction never replaces (or later retracts) a visit of the same key mapped in the run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import {
  ensureSecretFingerprint,
  secretFingerprint,
  secretFingerprintKey,
  SecretMismatchError,
} from '../../src/sync/secret-fingerprint.js';
import { syncCentre } from '../../src/sync/run-sync.js';
import { createCentreServices } from '../../src/sync/centre-services.js';
import { createSubmissionEnqueuer } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { createRuntime } from '../../src/runtime.js';
import { startWorker } from '../../src/worker.js';
import { startServer } from '../../src/server.js';
import { silentLogger } from '../../src/util/logger.js';
import { SUBMISSIONS_QUEUE, type SubmissionJobData } from '../../queues/submissions.js';
import {
  SECRET,
  deletePrefix,
  makeRetraction,
  makeVisit,
  testPrefix,
  testRedis,
} from './helpers.js';
import { useTestRedis } from './redis-scope.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

const OTHER = 'b7e4c1d09a3f8e2b6c5d4a1f0e9b8c7d';
const REFUSAL =
  /this Redis holds state made with another LHN_PSEUDONYM_SECRET; every visit would be re-keyed and changes dropped; use the original secret, or a new LHN_QUEUE_PREFIX for a fresh start/;

describe('secret fingerprint', () => {
  const { redis, prefix } = useTestRedis();

  it('when first used, then Redis holds an HMAC fingerprint (never the secret); the same secret passes, another is refused', async () => {
    await ensureSecretFingerprint(redis, prefix, SECRET);
    const stored = await redis.get(secretFingerprintKey(prefix));
    expect(stored).toBe(secretFingerprint(SECRET));
    expect(stored).toMatch(/^[0-9a-f]{64}$/);
    expect(stored).not.toContain(SECRET);
    expect(secretFingerprint(OTHER)).not.toBe(stored);
    await ensureSecretFingerprint(redis, prefix, SECRET);
    const err = await ensureSecretFingerprint(redis, prefix, OTHER).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SecretMismatchError);
    expect((err as Error).message).toMatch(REFUSAL);
    expect((err as Error).message).not.toContain(OTHER);
  });
});

describe('a sync, worker and serve with another secret than the state was made with', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, seed: 5, centreId: 'secret-mismatch' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when a full sync runs with secret B after one with secret A, then it fails with the refusal and enqueues nothing', async () => {
    const first = await f.runSync('full');
    expect(first.status).toBe('succeeded');
    const jobsBefore = await f.runtime.queues.submissions.count();
    const services = await createCentreServices({
      config: { ...f.config, pseudonymSecret: OTHER },
      redis: f.runtime.redis,
      prefix: f.runtime.prefix,
      logger: silentLogger,
    })(f.centre);
    f.ehr.requests.length = 0;
    const err = await syncCentre(
      {
        redis: f.runtime.redis,
        prefix: f.runtime.prefix,
        submissionsQueue: f.runtime.queues.submissions,
        runStore: f.runtime.runStore,
        pseudonymSecret: OTHER,
        ...services,
      },
      { centre: f.centre, mode: 'full', reason: 'manual' },
    ).catch((e: unknown) => e);
    expect((err as Error).name).toBe('SyncFailedError');
    const run = (await f.runtime.runStore.latest(f.centre.id))!;
    expect(run.status).toBe('failed');
    expect(run.errors.map((e) => e.message).join(' ')).toMatch(REFUSAL);
    expect(run.counts.enqueued).toBe(0);
    expect(await f.runtime.queues.submissions.count()).toBe(jobsBefore);
    expect(f.ehr.requests).toHaveLength(0);
  });

  it('when a worker or serve starts with secret B on that Redis, then it refuses to start', async () => {
    const config = { ...f.config, pseudonymSecret: OTHER };
    const runtime = await createRuntime(config, {
      centres: [f.centre],
      prefix: f.runtime.prefix,
      logger: silentLogger,
    });
    try {
      const err = await startWorker(runtime, {
        processors: { sync: true, submissions: false },
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SecretMismatchError);
      expect((err as Error).message).toMatch(REFUSAL);
      expect(await runtime.queues.sync.getWorkers()).toHaveLength(0);
    } finally {
      await runtime.close();
    }
    const served = await startServer(
      { ...config, api: { ...config.api, host: '127.0.0.1', port: 0 } },
      { centres: [f.centre], prefix: f.runtime.prefix, logger: silentLogger, alertIntervalMs: 0 },
    ).catch((e: unknown) => e);
    expect(served).toBeInstanceOf(SecretMismatchError);
  });
});

describe('a retraction of a key mapped as a visit in the same run', () => {
  let redis: Redis;
  let queue: Queue<SubmissionJobData>;
  const prefix = testPrefix();
  beforeAll(() => {
    redis = testRedis();
    queue = new Queue<SubmissionJobData>(SUBMISSIONS_QUEUE, { connection: redis, prefix });
  });
  afterAll(async () => {
    await queue.obliterate({ force: true });
    await queue.close();
    await deletePrefix(redis, prefix);
    await redis.quit();
  });

  const enqueuer = (centreId: string, batchSize: number) =>
    createSubmissionEnqueuer({
      queue,
      redis,
      state: openVisitState(redis, prefix, centreId),
      centreId,
      pseudonymSecret: SECRET,
      runId: 'run-1',
      batchSize,
    });

  it.each([
    ['in the same batch', 10],
    ['in a later batch', 1],
  ])(
    'when the visit was sent before and the run maps a new version and then retracts its key %s, then the visit wins',
    async (_, batchSize) => {
      const c = `c-collide-${batchSize}`;
      const v1 = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
      const before = enqueuer(c, batchSize);
      await before.add(v1);
      await before.flush();

      const run = enqueuer(c, batchSize);
      const v2 = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
      await run.add(v2);
      await run.add(makeRetraction({ centreId: c, patientId: 'p1', encounterId: 'e1' }));
      await run.flush();
      expect(run.counts).toMatchObject({ enqueued: 1, retracted: 0, retractionsSkipped: 1 });
      const entry = (await openVisitState(redis, prefix, c).getMany([v2.visitKey]))[0];
      expect(entry?.r).toBeUndefined();
      expect(entry?.h).toBe(v2.contentHash);
    },
  );
});
