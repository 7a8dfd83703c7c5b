// The Idempotency-Key of a delivery is its job id and the incarnation of the Redis state the
// job was enqueued in (`<job id>.<incarnation>`). Redis may come back empty (it keeps nothing
// on disk): its jobs and sequence counters are gone, so job ids repeat ones used before the
// loss. Without the incarnation, a version sent before the loss and sent again after it (the
// visit went A -> B, then back to A) reused A's old key: a registry that replays the answer of
// a repeated key answered with A's old `201 created`, the job counted as delivered, and the
// registry kept B (docs/registry-contract.md, Idempotency).
import { afterEach, describe, expect, it } from 'vitest';
import { deliveryIdempotencyKey } from '../../src/registry/delivery.js';
import { revertJobId } from '../../src/sync/enqueue.js';
import { ensureIncarnation, incarnationKey } from '../../src/sync/secret-fingerprint.js';
import { parseIdempotencyKey } from '../../src/sandbox/registry/index.js';
import { deletePrefix, makeVisit, testPrefix, testRedis, waitFor } from '../sync/helpers.js';
import { startReplayBed } from './replay-bed.js';

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

describe('a registry behind idempotency middleware, and a Redis that comes back empty', () => {
  const centreId = 'c-incarnation';
  const va = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
  const vb = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
  let bed: Awaited<ReturnType<typeof startReplayBed>> | undefined;
  afterEach(async () => {
    await bed?.close();
    bed = undefined;
  });

  it('when the visit went A -> B, the Redis lost its state and the source is back at A, then the registry ends with A', async () => {
    bed = await startReplayBed();
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
    bed = await startReplayBed({
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
    bed = await startReplayBed({
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
