import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  SUBMISSIONS_QUEUE,
  SUBMISSIONS_WORKER_LIMITER,
  createSubmissionBackoff,
  createSubmissionProcessor,
  rateLimitPauseMs,
  retrySpanMs,
  submissionJobOptions,
  visitClaimMs,
  type SubmissionJobData,
  type SubmissionProcessorDeps,
} from '../../queues/submissions.js';
import {
  RegistryUnavailableError,
  createRegistryClient,
  parseRetryAfterMs,
  type RegistryClient,
} from '../../src/registry/delivery.js';
import {
  countFailedByCentre,
  failedSubmissionIds,
  listFailedSubmissions,
  listResolvedSubmissions,
  resolveFailedSubmission,
  retryAllFailedSubmissions,
  retryFailedSubmission,
} from '../../src/sync/submission-admin.js';
import { createSubmissionEnqueuer, type EnqueueCounts } from '../../src/sync/enqueue.js';
import type { RegistrySubmission } from '../../src/registry/submission.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { createMetrics } from '../../src/util/metrics.js';
import {
  SECRET,
  deletePrefix,
  failingAfterAddBulk,
  makeVisit,
  testPrefix,
  testRedis,
  waitFor,
} from '../sync/helpers.js';

describe('submission options', () => {
  it('when the defaults are used, then retries span more than an hour and failed jobs are kept', () => {
    const config = parseServiceConfig({ pseudonymSecret: SECRET });
    expect(retrySpanMs(config.submissions)).toBeGreaterThan(3600_000);
    const opts = submissionJobOptions(config.submissions);
    expect(opts.removeOnFail).toBe(false);
    expect(opts.backoff).toEqual({ type: 'registry', delay: 5000 });
    expect(opts.removeOnComplete).toEqual({ age: 7 * 24 * 3600, count: 100_000 });
  });
});

describe('visit claim lease', () => {
  it('when auth is client credentials, then the lease covers token fetch, post, 401, token fetch, post and the commit window', () => {
    const cc = {
      type: 'client-credentials' as const,
      tokenUrl: 'https://r.example/token',
      clientId: 'c',
      clientSecret: 's',
    };
    expect(visitClaimMs({ timeoutMs: 30_000, auth: cc })).toBe(5 * 30_000 + 5_000);
    expect(visitClaimMs({ timeoutMs: 30_000, auth: { type: 'none' } })).toBe(2 * 30_000 + 5_000);
  });
});

describe('submission backoff', () => {
  const backoff = createSubmissionBackoff({
    attempts: 12,
    backoffMs: 5000,
    keepCompletedHours: 1,
    keepCompletedCount: 1,
  });
  it('when the registry sent no Retry-After, then the delay doubles per attempt', () => {
    expect([1, 2, 3, 4].map((n) => backoff(n, 'registry', new Error('x')))).toEqual([
      5000, 10000, 20000, 40000,
    ]);
  });
  it('when the registry sent a longer Retry-After, then it is honoured; a shorter one is not a shortcut', () => {
    const later = new RegistryUnavailableError('503', 503, 120_000);
    expect(backoff(1, 'registry', later)).toBe(120_000);
    const sooner = new RegistryUnavailableError('503', 503, 1000);
    expect(backoff(3, 'registry', sooner)).toBe(20_000);
  });
  it('when the registry asks every delivery to wait (429, or 503 with Retry-After), then the queue pauses for it, at least 1 s and at most an hour', () => {
    expect(rateLimitPauseMs(new RegistryUnavailableError('429', 429, 3000))).toBe(3000);
    expect(rateLimitPauseMs(new RegistryUnavailableError('503', 503, 120_000))).toBe(120_000);
    expect(rateLimitPauseMs(new RegistryUnavailableError('429', 429, 0))).toBe(1000);
    expect(rateLimitPauseMs(new RegistryUnavailableError('429', 429, 9e9))).toBe(3_600_000);
    // No Retry-After, or another status: that job alone backs off.
    expect(rateLimitPauseMs(new RegistryUnavailableError('429', 429))).toBeUndefined();
    expect(rateLimitPauseMs(new RegistryUnavailableError('503', 503))).toBeUndefined();
    expect(rateLimitPauseMs(new RegistryUnavailableError('502', 502, 3000))).toBeUndefined();
    expect(rateLimitPauseMs(new Error('x'))).toBeUndefined();
  });
  it('when Retry-After is absurd or a date, then it is capped at an hour or converted', () => {
    expect(parseRetryAfterMs('99999999')).toBe(3_600_000);
    expect(parseRetryAfterMs(new Date(Date.now() + 30_000).toUTCString())).toBeGreaterThan(25_000);
    expect(parseRetryAfterMs('soon')).toBeUndefined();
  });
});

/** A delivery test bed: Redis under a unique prefix, the sandbox registry, queue and worker. */
interface DeliveryBed {
  redis: Redis;
  registry: SandboxRegistry;
  queue: Queue<SubmissionJobData>;
  worker: Worker<SubmissionJobData>;
  prefix: string;
  /** Enqueues submissions of a centre as one sync run would. */
  enqueue(centreId: string, subs: RegistrySubmission[], runId?: string): Promise<EnqueueCounts>;
  close(): Promise<void>;
}

async function startDeliveryBed(options: {
  attempts: number;
  timeoutMs?: number;
  concurrency?: number;
  /** Wraps the real registry client (to hold or observe deliveries). */
  client?: (real: RegistryClient) => RegistryClient;
  processor?: Partial<
    Pick<SubmissionProcessorDeps, 'metrics' | 'visitBusyDelayMs' | 'visitLockMs'>
  >;
  /** Wraps the connection the processor reads the visit state with (to slow it). */
  processorRedis?: (real: Redis) => Redis;
  /** Create the worker without starting it (the test calls `worker.run()`). */
  paused?: boolean;
  /** Wire the queue-wide rate limit as src/worker.ts does. */
  rateLimit?: boolean;
}): Promise<DeliveryBed> {
  const redis = testRedis();
  const prefix = testPrefix();
  const registry = await startSandboxRegistry();
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    registry: { url: registry.url, timeoutMs: options.timeoutMs ?? 2000 },
    submissions: { attempts: options.attempts, backoffMs: 50 },
  });
  const real = createRegistryClient({ config: config.registry });
  const queue = new Queue<SubmissionJobData>(SUBMISSIONS_QUEUE, {
    connection: redis,
    prefix,
    defaultJobOptions: submissionJobOptions(config.submissions),
  });
  const worker = new Worker<SubmissionJobData>(
    SUBMISSIONS_QUEUE,
    createSubmissionProcessor({
      client: options.client ? options.client(real) : real,
      redis: options.processorRedis ? options.processorRedis(redis) : redis,
      prefix,
      ...options.processor,
      ...(options.rateLimit ? { rateLimit: (ms: number) => queue.rateLimit(ms) } : {}),
    }),
    {
      connection: redis,
      prefix,
      ...(options.rateLimit ? { limiter: SUBMISSIONS_WORKER_LIMITER } : {}),
      autorun: !options.paused,
      concurrency: options.concurrency ?? 4,
      settings: { backoffStrategy: createSubmissionBackoff(config.submissions) },
    },
  );
  return {
    redis,
    registry,
    queue,
    worker,
    prefix,
    async enqueue(centreId, subs, runId = 'run-x') {
      const e = createSubmissionEnqueuer({
        queue,
        redis,
        state: openVisitState(redis, prefix, centreId),
        centreId,
        pseudonymSecret: SECRET,
        runId,
        batchSize: 10,
      });
      for (const sub of subs) await e.add(sub);
      await e.flush();
      return e.counts;
    },
    async close() {
      await worker.close();
      await queue.obliterate({ force: true });
      await queue.close();
      await deletePrefix(redis, prefix);
      await redis.quit();
      await registry.close();
    },
  };
}

describe('submissions queue with the delivery worker', () => {
  let redis: Redis;
  let registry: SandboxRegistry;
  let queue: Queue<SubmissionJobData>;
  let bed: DeliveryBed;
  let prefix = '';
  let centreSeq = 0;
  let centreId = '';

  beforeAll(async () => {
    bed = await startDeliveryBed({ attempts: 12 });
    ({ redis, registry, queue, prefix } = bed);
  });
  afterAll(async () => {
    await bed?.close();
  });
  beforeEach(() => {
    registry.reset();
    registry.faults.clear();
    centreSeq += 1;
    centreId = `c-${centreSeq}`;
  });

  const enqueue = (subs: RegistrySubmission[]) => bed.enqueue(centreId, subs);

  const completed = async (ids: string[]) => {
    for (const id of ids)
      if ((await (await queue.getJob(id))?.getState()) !== 'completed') return false;
    return true;
  };

  it('when the registry answers 503 for a while and then 200, then everything is delivered exactly once', async () => {
    registry.faults.unavailableForMs(1500);
    const visits = Array.from({ length: 30 }, (_, i) =>
      makeVisit({ centreId, patientId: `p${i % 5}`, encounterId: `e${i}` }),
    );
    await enqueue(visits);
    await waitFor(() => completed(visits.map((v) => v.submissionId)), 40_000, 'all delivered');
    expect(registry.counts().faulted).toBeGreaterThan(0);
    const stored = registry.submissions();
    expect(stored).toHaveLength(30);
    expect(new Set(stored.map((s) => s.submissionId)).size).toBe(30);
    expect(registry.visits().every((v) => v.version === 1)).toBe(true);
    for (const v of visits)
      expect(registry.visits().find((s) => s.visitKey === v.visitKey)!.current).toEqual(v);
  });

  it('when the registry rejects a submission, then the job fails at once with the reason, and a retry after the fix delivers it', async () => {
    const bad = makeVisit({ centreId, patientId: 'p1', encounterId: 'bad' });
    registry.faults.rejectSubmission(bad.submissionId, 'visit date in the future');
    await enqueue([bad]);
    await waitFor(
      async () => (await (await queue.getJob(bad.submissionId))?.getState()) === 'failed',
      10_000,
      'the job to fail',
    );
    const { items } = await listFailedSubmissions(queue, redis, { centreId });
    expect(items).toHaveLength(1);
    expect(items[0]).toMatchObject({
      submissionId: bad.submissionId,
      attemptsMade: 1,
      permanent: true,
      kind: 'visit',
      runId: 'run-x',
    });
    expect(items[0]!.failedReason).toContain('visit date in the future');

    registry.faults.clear();
    expect(await retryFailedSubmission(queue, bad.submissionId)).toBe(true);
    await waitFor(() => completed([bad.submissionId]), 10_000, 'the retried job');
    expect(registry.submissions().map((s) => s.submissionId)).toEqual([bad.submissionId]);
    expect(await retryFailedSubmission(queue, bad.submissionId)).toBe(false);
  });

  it('when a submission failed before its last attempt for another reason than a refusal, then it is not listed as rejected by the registry', async () => {
    const visit = makeVisit({ centreId, patientId: 'p1', encounterId: 'not-refused' });
    // Job data the processor refuses (UnrecoverableError after one attempt of 12), as a job
    // stalled too often also fails early: neither is the registry's refusal.
    await queue.add('submission', { submission: visit, extra: 1 } as never, {
      jobId: visit.submissionId,
    });
    await waitFor(
      async () => (await (await queue.getJob(visit.submissionId))?.getState()) === 'failed',
      10_000,
      'the job to fail',
    );
    const { items } = await listFailedSubmissions(queue, redis, { centreId });
    expect(items).toHaveLength(1);
    expect(items[0]).toMatchObject({ attemptsMade: 1, permanent: false });
    expect(items[0]!.failedReason).toContain('invalid submission job data');
    expect(registry.submissions()).toEqual([]);
    // Other tests here count the whole failed list.
    await (await queue.getJob(visit.submissionId))!.remove();
  });

  it('when a failed submission is marked resolved, then it leaves the failed list and is kept as a resolved record', async () => {
    const bad = makeVisit({ centreId, patientId: 'p1', encounterId: 'bad2' });
    registry.faults.rejectSubmission(bad.submissionId, 'unknown centre');
    await enqueue([bad]);
    await waitFor(
      async () => (await (await queue.getJob(bad.submissionId))?.getState()) === 'failed',
      10_000,
      'the job to fail',
    );
    const record = await resolveFailedSubmission(queue, redis, prefix, bad.submissionId, {
      resolvedBy: 'data-manager',
      note: 'centre not yet registered; will resend',
    });
    expect(record).toMatchObject({ resolvedBy: 'data-manager', submissionId: bad.submissionId });
    expect((await listFailedSubmissions(queue, redis, { centreId })).total).toBe(0);
    const resolved = await listResolvedSubmissions(redis, prefix);
    expect(resolved[0]).toMatchObject({
      submissionId: bad.submissionId,
      note: 'centre not yet registered; will resend',
    });
    expect(resolved[0]!.failedReason).toContain('unknown centre');
    expect(resolved[0]!.submission).toEqual(bad);
  });

  it('when several submissions failed, then retry-all requeues every one of the centre', async () => {
    const bad = [0, 1, 2].map((i) => makeVisit({ centreId, patientId: 'p', encounterId: `r${i}` }));
    for (const b of bad) registry.faults.rejectSubmission(b.submissionId, 'nope');
    await enqueue(bad);
    await waitFor(
      async () => (await listFailedSubmissions(queue, redis, { centreId })).total === 3,
      10_000,
      'three failures',
    );
    registry.faults.clear();
    expect(await retryAllFailedSubmissions(queue, redis, { centreId })).toBe(3);
    await waitFor(() => completed(bad.map((b) => b.submissionId)), 10_000, 'all retried');
    expect(registry.submissions()).toHaveLength(3);
  });

  it('when failed submissions of two centres span several scan chunks, then each centre is counted and paged from ids alone', async () => {
    const other = `${centreId}-other`;
    const mine = [0, 1, 2, 3, 4].map((i) =>
      makeVisit({ centreId, patientId: 'p', encounterId: `c${i}` }),
    );
    const theirs = [0, 1, 2].map((i) =>
      makeVisit({ centreId: other, patientId: 'p', encounterId: `c${i}` }),
    );
    for (const b of [...mine, ...theirs]) registry.faults.rejectSubmission(b.submissionId, 'no');
    await enqueue([...mine, ...theirs]);
    await waitFor(
      async () => (await queue.getFailedCount()) === mine.length + theirs.length,
      10_000,
      'eight failures',
    );
    const ids = await failedSubmissionIds(queue, redis, { chunk: 3 });
    expect(ids).toHaveLength(8);
    expect(new Set(ids.map((i) => i.jobId)).size).toBe(8);
    const counts = await countFailedByCentre(queue, redis);
    expect(Object.fromEntries(counts)).toEqual({ [centreId]: 5, [other]: 3 });
    const first = await listFailedSubmissions(queue, redis, { centreId: other, limit: 2 });
    const second = await listFailedSubmissions(queue, redis, {
      centreId: other,
      offset: 2,
      limit: 2,
    });
    expect(first.total).toBe(3);
    expect([...first.items, ...second.items].map((i) => i.submissionId).sort()).toEqual(
      theirs.map((t) => t.submissionId).sort(),
    );
    expect(first.items.every((i) => i.centreId === other)).toBe(true);
    // Newest first, as the unfiltered list.
    const all = await listFailedSubmissions(queue, redis, { limit: 8 });
    expect(ids.map((i) => i.jobId)).toEqual(all.items.map((i) => i.jobId));
    registry.faults.clear();
    expect(await retryAllFailedSubmissions(queue, redis)).toBe(8);
    await waitFor(() => completed([...mine, ...theirs].map((b) => b.submissionId)), 10_000, 'all');
  });

  /**
   * Enqueues an older version (with `enqueueOlder`) that the registry answers 503 at first,
   * then a newer one; only the newer may reach the registry.
   */
  async function expectOlderSuperseded(
    enqueueOlder: (older: RegistrySubmission) => Promise<unknown>,
  ) {
    registry.faults.unavailableForMs(800);
    const older = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    await enqueueOlder(older);
    await waitFor(async () => registry.counts().faulted > 0, 10_000, 'a first failed attempt');
    const newer = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    await enqueue([newer]);
    await waitFor(
      () => completed([older.submissionId, newer.submissionId]),
      20_000,
      'both jobs to finish',
    );
    expect((await queue.getJob(older.submissionId))!.returnvalue).toEqual({ status: 'superseded' });
    expect(registry.submissions().map((s) => s.submissionId)).toEqual([newer.submissionId]);
  }

  it('when an older version is still retrying and a newer one is enqueued, then only the newer reaches the registry', async () => {
    await expectOlderSuperseded((older) => enqueue([older]));
  });

  it('when the older version was enqueued by a machine whose clock runs fast, then it is still superseded by the newer', async () => {
    await expectOlderSuperseded(async (older) => {
      const realNow = Date.now;
      Date.now = () => realNow() + 120_000; // the first sync ran on a machine 2 minutes fast
      try {
        await enqueue([older]);
      } finally {
        Date.now = realNow;
      }
    });
  });
});

describe('submission retries after the attempts ran out', () => {
  const centreId = 'c-fresh';
  const metrics = createMetrics();
  let bed: DeliveryBed;
  beforeAll(async () => {
    bed = await startDeliveryBed({ attempts: 2, concurrency: 1, processor: { metrics } });
  });
  afterAll(async () => {
    await bed?.close();
  });

  it('when a person retries a submission that used up its attempts, then it gets a fresh retry budget and survives one more outage', async () => {
    const { queue, registry } = bed;
    const visit = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1' });
    registry.faults.unavailableForMs(60_000);
    const stateOf = async () => (await queue.getJob(visit.submissionId))?.getState();
    await bed.enqueue(centreId, [visit], 'run-fresh');
    await waitFor(
      async () => (await stateOf()) === 'failed',
      10_000,
      'the job to use up 2 attempts',
    );
    expect((await queue.getJob(visit.submissionId))!.attemptsMade).toBe(2);
    // The last attempt's failure is the permanent one: the job now stays failed.
    const failures = (await metrics.submissionsFailed.get()).values;
    expect(failures.map((v) => [v.labels.permanent, v.value]).sort()).toEqual([
      ['false', 1],
      ['true', 1],
    ]);
    // The registry is back but blips once more right after the retry.
    registry.faults.clear();
    registry.faults.unavailableForMs(30);
    expect(await retryFailedSubmission(queue, visit.submissionId)).toBe(true);
    await waitFor(async () => (await stateOf()) === 'completed', 10_000, 'the retried job');
    expect(registry.submissions().map((s) => s.submissionId)).toEqual([visit.submissionId]);
  });
});

describe('deliveries of one visit', () => {
  const centreId = 'c-order';
  let releaseOlder: () => void = () => undefined;
  const olderHeld = new Promise<void>((resolve) => (releaseOlder = resolve));
  const older = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
  const newer = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
  let bed: DeliveryBed;
  beforeAll(async () => {
    bed = await startDeliveryBed({
      attempts: 5,
      timeoutMs: 5000,
      // The older version's request is slow to leave (a TLS handshake, a busy pool...).
      client: (real) => ({
        deliver: async (s, options) => {
          if (s.submissionId === older.submissionId) await olderHeld;
          return real.deliver(s, options);
        },
      }),
      processor: { visitBusyDelayMs: 100 },
    });
  });
  afterAll(async () => {
    releaseOlder();
    await bed?.close();
  });

  it('when a newer version is enqueued while an older one is being delivered, then it waits, and the registry ends with the newer', async () => {
    const { queue, registry } = bed;
    const stateOf = async (id: string) => (await queue.getJob(id))?.getState();
    await bed.enqueue(centreId, [older], 'run-older');
    await waitFor(
      async () => (await stateOf(older.submissionId)) === 'active',
      10_000,
      'older active',
    );
    await bed.enqueue(centreId, [newer], 'run-newer');
    // The newer one cannot pass while the older holds the visit.
    await new Promise((r) => setTimeout(r, 600));
    expect(registry.submissions()).toHaveLength(0);
    releaseOlder();
    await waitFor(
      async () => (await stateOf(newer.submissionId)) === 'completed',
      15_000,
      'newer delivered',
    );
    expect(
      registry
        .submissions()
        .map((s) => s.submissionId)
        .at(-1),
    ).toBe(newer.submissionId);
    const visit = registry.visits().find((v) => v.visitKey === newer.visitKey)!;
    expect(visit.current).toEqual(newer);
  });
});

describe('a delivery whose outcome is unknown', () => {
  const centreId = 'c-doubt';
  const timeoutMs = 300;
  let bed: DeliveryBed;
  beforeAll(async () => {
    bed = await startDeliveryBed({
      attempts: 5,
      timeoutMs,
      processor: {
        visitBusyDelayMs: 100,
        visitLockMs: visitClaimMs({ timeoutMs, auth: { type: 'none' } }),
      },
    });
  });
  afterAll(async () => {
    await bed?.close();
  });

  it('when the older version times out while the registry still stores it, then a newer one waits for the claim to lapse, and the registry ends with the newer', async () => {
    const { queue, registry, redis, prefix } = bed;
    const older = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const newer = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    // The registry stores the older version 1.2 s after it arrived; the client gave up at 0.3 s.
    registry.faults.slowCommit(older.submissionId, 1200);
    await bed.enqueue(centreId, [older], 'run-older');
    await waitFor(async () => registry.counts().requests > 0, 10_000, 'the older post');
    await new Promise((r) => setTimeout(r, timeoutMs + 200));
    // The visit stays claimed, marked in doubt.
    const claim = await redis.get(`${prefix}:deliver:${centreId}:${older.visitKey}`);
    expect(claim).toMatch(/^doubt:/);
    await bed.enqueue(centreId, [newer], 'run-newer');
    const finished = async (id: string) =>
      ['completed', 'failed'].includes((await (await queue.getJob(id))?.getState()) ?? '');
    await waitFor(
      async () => (await finished(older.submissionId)) && (await finished(newer.submissionId)),
      20_000,
      'both jobs to finish',
    );
    expect(registry.submissions().map((s) => s.submissionId)).toEqual([
      older.submissionId,
      newer.submissionId,
    ]);
    const visit = registry.visits().find((v) => v.visitKey === newer.visitKey)!;
    expect(visit.current).toEqual(newer);
    expect((await queue.getJob(older.submissionId))!.returnvalue).toEqual({ status: 'superseded' });
  });
});

describe('a revert while the older job is deciding', () => {
  const centreId = 'c-revert-race';
  const a = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
  const b = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
  let bed: DeliveryBed;
  let holdNextLookup = false;
  let lookupHeld: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (lookupHeld = resolve));
  beforeAll(async () => {
    bed = await startDeliveryBed({
      attempts: 5,
      concurrency: 1,
      paused: true,
      processor: { visitBusyDelayMs: 100 },
      // The first supersede lookup comes back late (a GC pause, Redis latency): A has read
      // "B is newer" and is about to complete as superseded when the source reverts to A.
      processorRedis: (real) =>
        new Proxy(real, {
          get(target, prop, receiver) {
            const value = Reflect.get(target, prop, receiver) as unknown;
            if (prop === 'hmget' && typeof value === 'function')
              return async (...args: unknown[]) => {
                const call = value as (...a: unknown[]) => Promise<unknown>;
                const result = await call.apply(target, args);
                if (holdNextLookup) {
                  holdNextLookup = false;
                  lookupHeld();
                  await new Promise((r) => setTimeout(r, 800));
                }
                return result;
              };
            return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
          },
        }),
    });
  });
  afterAll(async () => {
    await bed?.close();
  });

  it('when the visit reverts to a version whose job is active and superseded, then that version is still delivered', async () => {
    const { queue, registry, worker } = bed;
    await bed.enqueue(centreId, [a], 'run-1');
    await bed.enqueue(centreId, [b], 'run-2');
    holdNextLookup = true;
    void worker.run();
    await held;
    expect(await (await queue.getJob(a.submissionId))!.getState()).toBe('active');
    const counts = await bed.enqueue(centreId, [a], 'run-3');
    await waitFor(
      async () => {
        const k = await queue.getJobCounts('waiting', 'active', 'delayed');
        return (k.waiting ?? 0) + (k.active ?? 0) + (k.delayed ?? 0) === 0;
      },
      15_000,
      'every job to finish',
    );
    expect((await queue.getJob(a.submissionId))!.returnvalue).toEqual({ status: 'superseded' });
    expect((await queue.getJob(b.submissionId))!.returnvalue).toEqual({ status: 'superseded' });
    const visit = registry.visits().find((v) => v.visitKey === a.visitKey);
    expect(visit?.current).toEqual(a);
    expect(counts).toMatchObject({ enqueued: 1, reverted: 1 });
  });
});

describe('a state write that fails after addBulk', () => {
  const centreId = 'c-ahead';
  let bed: DeliveryBed;
  beforeAll(async () => {
    bed = await startDeliveryBed({ attempts: 20, processor: { visitBusyDelayMs: 50 } });
  });
  afterAll(async () => {
    await bed?.close();
  });

  it('when the newer version is added but its state write fails, then the older retrying version is still superseded', async () => {
    const { queue, registry, redis, prefix } = bed;
    const older = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const newer = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    registry.faults.unavailableForMs(800);
    await bed.enqueue(centreId, [older], 'run-older');
    await waitFor(async () => registry.counts().faulted > 0, 10_000, 'a first failed attempt');
    // The next run: every HSET once addBulk was called fails, as if Redis ran out of memory
    // or the process died right after addBulk.
    const { queue: watchedQueue, redis: failing } = failingAfterAddBulk(queue, redis);
    const e = createSubmissionEnqueuer({
      queue: watchedQueue,
      redis,
      state: openVisitState(failing, prefix, centreId),
      centreId,
      pseudonymSecret: SECRET,
      runId: 'run-newer',
    });
    await e.add(newer);
    await expect(e.flush()).rejects.toThrow(/OOM/);
    const finished = async (id: string) =>
      ['completed', 'failed'].includes((await (await queue.getJob(id))?.getState()) ?? '');
    await waitFor(
      async () => (await finished(older.submissionId)) && (await finished(newer.submissionId)),
      20_000,
      'both jobs to finish',
    );
    expect(registry.submissions().map((s) => s.submissionId)).toEqual([newer.submissionId]);
    expect((await queue.getJob(older.submissionId))!.returnvalue).toEqual({ status: 'superseded' });
  });
});

describe('a registry rate limit (429 with Retry-After)', () => {
  it('when the registry answers 429 Retry-After: 1 for a while, then the queue pauses: only the deliveries in flight meet the limit, and no job uses an attempt on it', async () => {
    let limitedUntil = 0;
    let refused = 0;
    const bed = await startDeliveryBed({
      attempts: 12,
      concurrency: 4,
      rateLimit: true,
      client: (real) => ({
        deliver: async (submission, options) => {
          if (limitedUntil === 0) limitedUntil = Date.now() + 800;
          if (Date.now() < limitedUntil) {
            refused += 1;
            throw new RegistryUnavailableError('registry answered HTTP 429', 429, 1000);
          }
          return real.deliver(submission, options);
        },
      }),
    });
    try {
      const visits = Array.from({ length: 30 }, (_, i) =>
        makeVisit({ centreId: 'rl', patientId: `p${i}`, encounterId: `e${i}` }),
      );
      const started = Date.now();
      await bed.enqueue('rl', visits);
      await waitFor(
        async () => (await bed.queue.getCompletedCount()) === visits.length,
        20_000,
        'all delivered',
      );
      expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
      // Without the queue-wide pause every queued job is posted into the limit (30 and more).
      expect(refused).toBeGreaterThan(0);
      expect(refused).toBeLessThanOrEqual(8);
      expect(bed.registry.submissions()).toHaveLength(visits.length);
      const jobs = await bed.queue.getCompleted(0, -1);
      expect(jobs.map((j) => j.attemptsMade)).toEqual(visits.map(() => 1));
    } finally {
      await bed.close();
    }
  });

  it('when the registry stays down answering 503 Retry-After, then deliveries pause but each job uses its attempts, and ends in the failed list', async () => {
    let refused = 0;
    const bed = await startDeliveryBed({
      attempts: 2,
      concurrency: 4,
      rateLimit: true,
      client: () => ({
        deliver: () => {
          refused += 1;
          return Promise.reject(
            new RegistryUnavailableError('registry answered HTTP 503', 503, 1000),
          );
        },
      }),
    });
    try {
      const visits = Array.from({ length: 3 }, (_, i) =>
        makeVisit({ centreId: 'down', patientId: `p${i}`, encounterId: `e${i}` }),
      );
      await bed.enqueue('down', visits);
      await waitFor(
        async () => (await bed.queue.getFailedCount()) === visits.length,
        20_000,
        'every job failed after its attempts',
      );
      const jobs = await bed.queue.getFailed(0, -1);
      expect(jobs.map((j) => j.attemptsMade)).toEqual(visits.map(() => 2));
      expect(refused).toBe(visits.length * 2);
    } finally {
      await bed.close();
    }
  });
});
