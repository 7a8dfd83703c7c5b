import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { createSubmissionEnqueuer, revertJobId } from '../../src/sync/enqueue.js';
import { isSuperseded, openVisitState } from '../../src/sync/visit-state.js';
import { SUBMISSIONS_QUEUE, type SubmissionJobData } from '../../queues/submissions.js';
import {
  SECRET,
  deletePrefix,
  failingAfterAddBulk,
  makeRetraction,
  makeVisit,
  testPrefix,
  testRedis,
  waitFor,
} from './helpers.js';

describe('idempotent enqueue', () => {
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

  function enqueuer(centreId: string, batchSize = 3) {
    return createSubmissionEnqueuer({
      queue,
      redis,
      state: openVisitState(redis, prefix, centreId),
      centreId,
      pseudonymSecret: SECRET,
      runId: 'run-1',
      batchSize,
    });
  }

  const visits = (centreId: string, n: number, pga: 'mild' | 'severe' = 'mild') =>
    Array.from({ length: n }, (_, i) =>
      makeVisit({ centreId, patientId: `p${i % 3}`, encounterId: `e${i}`, pga }),
    );

  it('when the same visits are enqueued twice, then the second run adds nothing and counts them unchanged', async () => {
    const first = enqueuer('c-same');
    for (const v of visits('c-same', 7)) await first.add(v);
    await first.flush();
    expect(first.counts).toMatchObject({ enqueued: 7, unchanged: 0 });
    const before = await queue.getJobCountByTypes('waiting');
    const second = enqueuer('c-same');
    for (const v of visits('c-same', 7)) await second.add(v);
    await second.flush();
    expect(second.counts).toMatchObject({ enqueued: 0, unchanged: 7 });
    expect(await queue.getJobCountByTypes('waiting')).toBe(before);
  });

  it.each([
    ['newer first', ['2', '1']],
    ['older first', ['1', '2']],
  ] as const)(
    'when one run maps a visit twice from two versions of its Encounter under two patients (%s), then the newer version is what is sent',
    async (_, order) => {
      const c = `c-moved-${order.join('')}`;
      // Version 1 under patient pA, version 2 (the Encounter moved to pB) under pB.
      const byVersion = {
        '1': makeVisit({ centreId: c, patientId: 'pA', encounterId: 'e1', versionId: '1' }),
        '2': makeVisit({ centreId: c, patientId: 'pB', encounterId: 'e1', versionId: '2' }),
      };
      const e = enqueuer(c, 1);
      for (const v of order) await e.add(byVersion[v]);
      await e.flush();
      const newer = byVersion['2'];
      expect(await queue.getJob(newer.submissionId)).toBeDefined();
      const state = await openVisitState(redis, prefix, c).getMany([newer.visitKey]);
      expect(state[0]?.h).toBe(newer.contentHash);
      if (order[0] === '2') {
        expect(e.counts).toMatchObject({ enqueued: 1, olderVersionsSkipped: 1 });
        expect(await queue.getJob(byVersion['1'].submissionId)).toBeUndefined();
      } else expect(e.counts).toMatchObject({ enqueued: 2, olderVersionsSkipped: 0 });
    },
  );

  it('when one visit changes, then exactly that visit is enqueued as a new job with its submission id', async () => {
    const c = 'c-change';
    const first = enqueuer(c);
    for (const v of visits(c, 5)) await first.add(v);
    await first.flush();
    const changed = visits(c, 5);
    changed[2] = makeVisit({ centreId: c, patientId: 'p2', encounterId: 'e2', pga: 'severe' });
    const second = enqueuer(c);
    for (const v of changed) await second.add(v);
    await second.flush();
    expect(second.counts).toMatchObject({ enqueued: 1, unchanged: 4 });
    const job = await queue.getJob(changed[2].submissionId);
    expect(job?.data.submission.contentHash).toBe(changed[2].contentHash);
  });

  it('when a retraction comes for a visit never sent, then it is skipped; for a sent visit, it is enqueued once', async () => {
    const c = 'c-retract';
    const e = enqueuer(c);
    await e.add(makeRetraction({ centreId: c, patientId: 'p1', encounterId: 'never' }));
    await e.flush();
    expect(e.counts).toMatchObject({ enqueued: 0, retractionsSkipped: 1 });

    await e.add(makeVisit({ centreId: c, patientId: 'p1', encounterId: 'sent' }));
    await e.flush();
    // A later run retracts it (within one run, a visit mapped wins over its retraction).
    const retraction = makeRetraction({ centreId: c, patientId: 'p1', encounterId: 'sent' });
    const later = enqueuer(c);
    await later.add(retraction);
    await later.flush();
    expect(later.counts.retracted).toBe(1);
    expect(await queue.getJob(retraction.submissionId)).toBeDefined();

    const again = enqueuer(c);
    await again.add(retraction);
    await again.flush();
    expect(again.counts).toMatchObject({ enqueued: 0, retractionsSkipped: 1 });
  });

  it('when a visit is enqueued, then its state records the source ids needed for a later retraction', async () => {
    const c = 'c-ids';
    const e = enqueuer(c);
    const v = makeVisit({ centreId: c, patientId: 'pat-9', encounterId: 'enc-9' });
    await e.add(v);
    await e.flush();
    const [entry] = await openVisitState(redis, prefix, c).getMany([v.visitKey]);
    expect(entry).toMatchObject({ h: v.contentHash, p: 'pat-9', e: 'enc-9' });
    expect(entry!.u).toBe('2024-05-01T10:00:00Z');
  });

  it('when the sync passes the source ids, then the state keeps those rather than the provenance', async () => {
    const c = 'c-given';
    const e = enqueuer(c);
    const v = makeVisit({ centreId: c, patientId: 'pat-1', encounterId: 'enc-1' });
    await e.add(v, {
      patientId: 'source-patient',
      encounterId: 'enc-1',
      encounterLastUpdated: '2025-01-01T00:00:00Z',
    });
    await e.flush();
    const [entry] = await openVisitState(redis, prefix, c).getMany([v.visitKey]);
    expect(entry).toMatchObject({ p: 'source-patient', e: 'enc-1', u: '2025-01-01T00:00:00Z' });
  });

  it('when the centre has no state yet, then visits are enqueued without lookups and retractions are not sent', async () => {
    const c = 'c-first';
    const e = createSubmissionEnqueuer({
      queue,
      redis,
      state: openVisitState(redis, prefix, c),
      centreId: c,
      pseudonymSecret: SECRET,
      runId: 'run-first',
      stateEmpty: true,
    });
    await e.add(makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1' }));
    await e.add(makeRetraction({ centreId: c, patientId: 'p1', encounterId: 'e2' }));
    await e.flush();
    expect(e.counts).toMatchObject({ enqueued: 1, retractionsSkipped: 1 });
    expect(await openVisitState(redis, prefix, c).size()).toBe(1);
  });

  it('when content reverts to an earlier version whose job completed, then a fresh job with the same submission is queued', async () => {
    const c = 'c-revert';
    const a = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const b = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    const e1 = enqueuer(c);
    await e1.add(a);
    await e1.flush();
    // Deliver the first version (a worker that accepts everything).
    const worker = new Worker(SUBMISSIONS_QUEUE, () => Promise.resolve({ status: 'accepted' }), {
      connection: redis,
      prefix,
    });
    await waitFor(
      async () => (await (await queue.getJob(a.submissionId))!.getState()) === 'completed',
      10_000,
      'the first version to complete',
    );
    await worker.close();
    const e2 = enqueuer(c);
    await e2.add(b);
    await e2.flush();
    const e3 = enqueuer(c);
    await e3.add(a);
    await e3.flush();
    expect(e3.counts).toMatchObject({ enqueued: 1, reverted: 1 });
    // The old job stays as it was; a fresh one (id with the enqueue sequence) carries A again.
    expect(await (await queue.getJob(a.submissionId))!.getState()).toBe('completed');
    const [entry] = await openVisitState(redis, prefix, c).getMany([a.visitKey]);
    const fresh = await queue.getJob(revertJobId(a.submissionId, entry!.n!));
    expect(await fresh!.getState()).toBe('waiting');
    expect(fresh!.data.submission).toEqual(a);
    expect(fresh!.data.seq).toBe(entry!.n);
  });

  it('when a newer version was enqueued after a job was created, then that job counts as superseded', async () => {
    const c = 'c-super';
    const a = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const b = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    const e = enqueuer(c);
    await e.add(a);
    await e.flush();
    const jobA = (await queue.getJob(a.submissionId))!;
    await new Promise((r) => setTimeout(r, 5));
    await e.add(b);
    await e.flush();
    const jobB = (await queue.getJob(b.submissionId))!;
    const [entry] = await openVisitState(redis, prefix, c).getMany([a.visitKey]);
    expect(isSuperseded(entry, a.contentHash, jobA.timestamp)).toBe(true);
    expect(isSuperseded(entry, b.contentHash, jobB.timestamp)).toBe(false);
  });

  it('when the state write after addBulk fails, then the newer version is already recorded (pending) and the next run only confirms it', async () => {
    const c = 'c-ahead';
    const a = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const b = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    const first = enqueuer(c);
    await first.add(a);
    await first.flush();
    const jobA = (await queue.getJob(a.submissionId))!;
    // The state write after addBulk fails.
    const failing = failingAfterAddBulk(queue, redis);
    const broken = createSubmissionEnqueuer({
      queue: failing.queue,
      redis,
      state: openVisitState(failing.redis, prefix, c),
      centreId: c,
      pseudonymSecret: SECRET,
      runId: 'run-2',
    });
    await broken.add(b);
    await expect(broken.flush()).rejects.toThrow(/OOM/);
    expect(await queue.getJob(b.submissionId)).toBeDefined();
    const [entry] = await openVisitState(redis, prefix, c).getMany([a.visitKey]);
    expect(entry).toMatchObject({ h: b.contentHash, w: 1 });
    // A's delivery (still pending) is superseded from now on.
    expect(isSuperseded(entry, a.contentHash, jobA.timestamp, jobA.data.seq)).toBe(true);
    const next = enqueuer(c);
    await next.add(b);
    await next.flush();
    expect(next.counts).toMatchObject({ enqueued: 0, unchanged: 1 });
    const [confirmed] = await openVisitState(redis, prefix, c).getMany([a.visitKey]);
    expect(confirmed?.w).toBeUndefined();
    expect(confirmed?.h).toBe(b.contentHash);
  });

  it('when addBulk fails after the state was written ahead, then the next run enqueues that version', async () => {
    const c = 'c-ahead-lost';
    const a = makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const failingQueue = new Proxy(queue, {
      get(target, prop, receiver) {
        if (prop === 'addBulk') return () => Promise.reject(new Error('connection lost'));
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
      },
    });
    const broken = createSubmissionEnqueuer({
      queue: failingQueue,
      redis,
      state: openVisitState(redis, prefix, c),
      centreId: c,
      pseudonymSecret: SECRET,
      runId: 'run-1',
    });
    await broken.add(a);
    await expect(broken.flush()).rejects.toThrow(/connection lost/);
    expect(await queue.getJob(a.submissionId)).toBeUndefined();
    const next = enqueuer(c);
    await next.add(a);
    await next.flush();
    expect(next.counts).toMatchObject({ enqueued: 1, unchanged: 0 });
    expect(await (await queue.getJob(a.submissionId))!.getState()).toBe('waiting');
    const [entry] = await openVisitState(redis, prefix, c).getMany([a.visitKey]);
    expect(entry?.w).toBeUndefined();
  });

  it('when a retraction is written ahead but never enqueued, then the visit still counts as sent and the retraction is enqueued again', async () => {
    const c = 'c-ahead-retract';
    const first = enqueuer(c);
    await first.add(makeVisit({ centreId: c, patientId: 'p1', encounterId: 'e1' }));
    await first.flush();
    const failingQueue = new Proxy(queue, {
      get(target, prop, receiver) {
        if (prop === 'addBulk') return () => Promise.reject(new Error('connection lost'));
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as () => unknown).bind(target) : value;
      },
    });
    const broken = createSubmissionEnqueuer({
      queue: failingQueue,
      redis,
      state: openVisitState(redis, prefix, c),
      centreId: c,
      pseudonymSecret: SECRET,
      runId: 'run-2',
    });
    const retraction = makeRetraction({ centreId: c, patientId: 'p1', encounterId: 'e1' });
    await broken.add(retraction);
    await expect(broken.flush()).rejects.toThrow(/connection lost/);
    const next = enqueuer(c);
    await next.add(retraction);
    await next.flush();
    expect(next.counts).toMatchObject({ enqueued: 1, retracted: 1 });
    const [entry] = await openVisitState(redis, prefix, c).getMany([retraction.visitKey]);
    expect(entry).toMatchObject({ r: 1 });
    expect(entry?.w).toBeUndefined();
  });
});
