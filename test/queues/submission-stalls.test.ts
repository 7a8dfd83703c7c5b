import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorker, type RunningWorker } from '../../src/worker.js';
import type { RegistryClient } from '../../src/registry/delivery.js';
import { createSubmissionEnqueuer } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { listFailedSubmissions } from '../../src/sync/submission-admin.js';
import { startSyncFixture, type SyncFixture } from '../sync/fixture.js';
import { SECRET, makeVisit, waitFor } from '../sync/helpers.js';

// A worker killed mid-delivery leaves its job active with a lock nobody renews (and a visit
// claim nobody renews): BullMQ's stalled check hands it to another worker. Here a "crash" is
// that state made by hand: the delivery hangs, and its job lock and visit claim are deleted.
describe('submission deliveries lost with their worker', () => {
  let f: SyncFixture;
  let worker: RunningWorker | undefined;
  const hung: (() => void)[] = [];
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 1, centreId: 'stalls' });
  });
  afterAll(async () => {
    for (const release of hung) release();
    await worker?.close();
    await f?.close();
  });

  it('when two workers die mid-delivery, then the third delivers it (it is not failed, nor shown as rejected)', async () => {
    let calls = 0;
    const client: RegistryClient = {
      deliver: async () => {
        calls += 1;
        if (calls <= 2)
          // Never answers while the test runs: the worker that sent it is "dead".
          await new Promise<void>((r) => hung.push(r));
        return { status: 'accepted', httpStatus: 201 };
      },
    };
    worker = await startWorker(f.runtime, {
      processors: { sync: false, submissions: true },
      registryClient: client,
      stalledIntervalMs: 200,
      lockDurationMs: 1_000,
    });
    const { redis, prefix } = f.runtime;
    const queue = f.runtime.queues.submissions;
    const visit = makeVisit({ centreId: 'stalls', patientId: 'p1', encounterId: 'e1' });
    const enqueuer = createSubmissionEnqueuer({
      queue,
      redis,
      state: openVisitState(redis, prefix, 'stalls'),
      centreId: 'stalls',
      pseudonymSecret: SECRET,
      runId: 'r',
    });
    await enqueuer.add(visit);
    await enqueuer.flush();
    const crash = async () => {
      await redis.del(
        `${prefix}:submissions:${visit.submissionId}:lock`,
        `${prefix}:deliver:stalls:${visit.visitKey}`,
      );
    };
    for (const n of [1, 2]) {
      await waitFor(() => calls >= n, 15_000, `delivery ${n} in flight`);
      await crash();
    }
    const state = async () => (await queue.getJob(visit.submissionId))?.getState();
    await waitFor(
      async () => ['completed', 'failed'].includes((await state()) ?? ''),
      15_000,
      'the job to finish',
    );
    const job = (await queue.getJob(visit.submissionId))!;
    expect(job.failedReason ?? '').toBe('');
    expect(await state()).toBe('completed');
    expect(calls).toBe(3);
    expect((await listFailedSubmissions(queue, redis)).total).toBe(0);
  });
});
