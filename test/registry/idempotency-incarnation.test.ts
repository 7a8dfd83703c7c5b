// The Idempotency-Key of a delivery is its job id and the incarnation of the Redis state the
// job was enqueued in (`<job id>.<incarnation>`). Redis may come back empty (it keeps nothing
// on disk): its jobs and sequence counters are gone, so job ids repeat ones used before the
// loss. Without the incarnation, a version sent before the loss and sent again after it (the
// visit went A -> B, then back to A) reused A's old key: a registry that replays the answer of
// a repeated key answered with A's old `201 created`, the job counted as delivered, and the
// registry kept B (docs/registry-contract.md, Idempotency).
import { afterEach, describe, expect, it } from 'vitest';
import { Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  SUBMISSIONS_QUEUE,
  createSubmissionBackoff,
  createSubmissionProcessor,
  submissionJobOptions,
  type SubmissionJobData,
} from '../../queues/submissions.js';
import {
  createRegistryClient,
  deliveryIdempotencyKey,
  type RegistryClient,
} from '../../src/registry/delivery.js';
import { createSubmissionEnqueuer, revertJobId } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { ensureIncarnation, incarnationKey } from '../../src/sync/secret-fingerprint.js';
import { parseIdempotencyKey, startSandboxRegistry } from '../../src/sandbox/registry/index.js';
import { parseServiceConfig } from '../../src/config/service.js';
import type { RegistrySubmission } from '../../src/registry/submission.js';
import {
  SECRET,
  deletePrefix,
  makeVisit,
  testPrefix,
  testRedis,
  waitFor,
} from '../sync/helpers.js';

const INC = '0123456789abcdef';

describe('the Idempotency-Key with an incarnation', () => {
  const a = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'mild' });

  it('when the job has an incarnation, then the key is <job id>.<incarnation>; without one (an older job), the job id', () => {
    const id = a.submissionId;
    expect(deliveryIdempotencyKey(id, id, INC)).toBe(`${id}.${INC}`);
    expect(deliveryIdempotencyKey(id, revertJobId(id, 4), INC)).toBe(`${id}-r4.${INC}`);
    expect(deliveryIdempotencyKey(id, 'by-hand', INC)).toBe(`${id}.${INC}`);
    expect(deliveryIdempotencyKey(id, id)).toBe(id);
    expect(deliveryIdempotencyKey(id, revertJobId(id, 4))).toBe(`${id}-r4`);
    // Not an incarnation the bridge makes: left out.
    expect(deliveryIdempotencyKey(id, id, 'x.y')).toBe(id);
  });

  it('when the sandbox parses a key with an incarnation, then it accepts both forms and refuses a malformed suffix', () => {
    const id = a.submissionId;
    expect(parseIdempotencyKey(`${id}.${INC}`, id)).toBeNull();
    expect(parseIdempotencyKey(`${id}-r3.${INC}`, id)).toBe(3);
    for (const bad of [`${id}.`, `${id}.ABCDEF0123456789`, `${id}.${INC}0`, `${id}-r0.${INC}`])
      expect(parseIdempotencyKey(bad, id)).toBeUndefined();
  });

  it('when the Redis has no incarnation, then one is created and kept; after the Redis lost its state, another', async () => {
    const redis = testRedis();
    const prefix = testPrefix();
    try {
      const first = await ensureIncarnation(redis, prefix);
      expect(first).toMatch(/^[0-9a-f]{16}$/);
      expect(await ensureIncarnation(redis, prefix)).toBe(first);
      expect(await redis.get(incarnationKey(prefix))).toBe(first);
      await deletePrefix(redis, prefix);
      const second = await ensureIncarnation(redis, prefix);
      expect(second).toMatch(/^[0-9a-f]{16}$/);
      expect(second).not.toBe(first);
    } finally {
      await deletePrefix(redis, prefix);
      await redis.quit();
    }
  });
});

/** Queue, worker and a replaying sandbox registry under a unique Redis prefix. */
async function startBed(options: { wrap?: (real: RegistryClient) => RegistryClient } = {}) {
  const redis: Redis = testRedis();
  const prefix = testPrefix();
  const registry = await startSandboxRegistry({ idempotencyReplay: true });
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    registry: { url: registry.url, timeoutMs: 2000 },
    submissions: { attempts: 4, backoffMs: 50 },
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
      client: options.wrap ? options.wrap(real) : real,
      redis,
      prefix,
    }),
    {
      connection: redis,
      prefix,
      concurrency: 2,
      settings: { backoffStrategy: createSubmissionBackoff(config.submissions) },
    },
  );
  async function idle(): Promise<void> {
    await waitFor(
      async () => {
        const k = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
        return Object.values(k).every((n) => n === 0);
      },
      15_000,
      'every job to finish',
    );
  }
  return {
    redis,
    prefix,
    registry,
    queue,
    /** Enqueues one version as a sync run would, and waits until it is delivered. */
    async sync(centreId: string, sub: RegistrySubmission, runId: string): Promise<void> {
      const e = createSubmissionEnqueuer({
        queue,
        redis,
        state: openVisitState(redis, prefix, centreId),
        centreId,
        pseudonymSecret: SECRET,
        runId,
      });
      await e.add(sub);
      await e.flush();
      await idle();
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

describe('a registry behind idempotency middleware, and a Redis that comes back empty', () => {
  const centreId = 'c-incarnation';
  const va = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
  const vb = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
  let bed: Awaited<ReturnType<typeof startBed>> | undefined;
  afterEach(async () => {
    await bed?.close();
    bed = undefined;
  });

  it('when the visit went A -> B, the Redis lost its state and the source is back at A, then the registry ends with A', async () => {
    bed = await startBed();
    await bed.sync(centreId, va, 'run-1');
    await bed.sync(centreId, vb, 'run-2');
    expect(bed.registry.visits()[0]!.current).toEqual(vb);
    // The Redis comes back empty: only this test's prefix is wiped.
    await deletePrefix(bed.redis, bed.prefix);
    await bed.sync(centreId, va, 'run-3');
    const visit = bed.registry.visits().find((v) => v.visitKey === va.visitKey)!;
    expect(visit.current).toEqual(va);
    expect(visit.history).toEqual([va.submissionId, vb.submissionId, va.submissionId]);
    expect(bed.registry.counts().replayed).toBe(0);
    const keys = bed.registry.submissions().map((s) => s.idempotencyKey);
    expect(new Set(keys).size).toBe(3);
    const now = await bed.redis.get(incarnationKey(bed.prefix));
    expect(keys[2]).toBe(`${va.submissionId}.${now}`);
  });

  it('when a delivery is retried, then every attempt of the job sends the same key', async () => {
    const sent: (string | undefined)[] = [];
    bed = await startBed({
      wrap: (real) => ({
        deliver: (s, o) => {
          sent.push(o?.idempotencyKey);
          return real.deliver(s, o);
        },
      }),
    });
    bed.registry.faults.unavailableFor(2);
    await bed.sync(centreId, va, 'run-1');
    const incarnation = await bed.redis.get(incarnationKey(bed.prefix));
    expect(incarnation).toMatch(/^[0-9a-f]{16}$/);
    expect(sent).toEqual([1, 2, 3].map(() => `${va.submissionId}.${incarnation}`));
    expect(bed.registry.counts()).toMatchObject({ faulted: 2, accepted: 1 });
    expect(bed.registry.visits()[0]!.current).toEqual(va);
  });

  it('when a job was queued by an older version (no incarnation in its data), then it is delivered under its job id', async () => {
    const sent: (string | undefined)[] = [];
    bed = await startBed({
      wrap: (real) => ({
        deliver: (s, o) => {
          sent.push(o?.idempotencyKey);
          return real.deliver(s, o);
        },
      }),
    });
    await bed.queue.add(
      'visit',
      { runId: 'old', seq: 1, submission: va },
      {
        jobId: va.submissionId,
      },
    );
    await waitFor(
      async () => (await bed!.queue.getCompletedCount()) === 1,
      15_000,
      'the old job to complete',
    );
    expect(sent).toEqual([va.submissionId]);
    expect(bed.registry.visits()[0]!.current).toEqual(va);
  });
});
