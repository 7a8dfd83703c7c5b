// A revert (a visit's content going back to an earlier version) is delivered with the
// Idempotency-Key `<submissionId>-r<seq>` (its job id), not the earlier version's key: a
// registry behind standard idempotency middleware, which replays the cached answer of a
// repeated key, would otherwise answer the revert with the earlier `201 created` and keep the
// newer version (docs/registry-contract.md, Idempotency).
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createRegistryClient, deliveryIdempotencyKey } from '../../src/registry/delivery.js';
import { revertJobId } from '../../src/sync/enqueue.js';
import {
  parseIdempotencyKey,
  startSandboxRegistry,
  type SandboxRegistry,
} from '../../src/sandbox/registry/index.js';
import { makeVisit } from '../sync/helpers.js';
import { startReplayBed } from './replay-bed.js';

async function post(
  registry: SandboxRegistry,
  body: unknown,
  key?: string,
): Promise<{ status: number; body: Record<string, unknown>; replayed: string | null }> {
  const res = await fetch(`${registry.url}/submissions`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(key !== undefined ? { 'idempotency-key': key } : {}),
    },
    body: JSON.stringify(body),
  });
  return {
    status: res.status,
    body: (await res.json()) as Record<string, unknown>,
    replayed: res.headers.get('idempotent-replayed'),
  };
}

const a = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'mild' });
const b = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'severe' });

describe('the Idempotency-Key of a delivery', () => {
  it('when the job is a first delivery or a revert, then the key is its job id; another job id falls back to the submissionId', () => {
    const id = a.submissionId;
    expect(deliveryIdempotencyKey(id, id)).toBe(id);
    expect(deliveryIdempotencyKey(id, revertJobId(id, 42))).toBe(`${id}-r42`);
    expect(deliveryIdempotencyKey(id, undefined)).toBe(id);
    expect(deliveryIdempotencyKey(id, '17')).toBe(id);
    expect(deliveryIdempotencyKey(id, `${id}-r`)).toBe(id);
    expect(deliveryIdempotencyKey(id, `${id}-r07`)).toBe(id);
    expect(deliveryIdempotencyKey(id, `${b.submissionId}-r3`)).toBe(id);
  });

  it('when the client is given a key, then it sends it (the body keeps the submissionId); without one it sends the submissionId', async () => {
    const seen: { key: string | null; body: { submissionId?: string } }[] = [];
    const recording: typeof fetch = async (_input, init) => {
      const headers = new Headers(init?.headers);
      seen.push({
        key: headers.get('idempotency-key'),
        body: JSON.parse(init?.body as string) as { submissionId?: string },
      });
      return new Response(JSON.stringify({ status: 'created', submissionId: a.submissionId }), {
        status: 201,
      });
    };
    const client = createRegistryClient({
      fetch: recording,
      config: { url: 'https://registry.example/', auth: { type: 'none' }, timeoutMs: 1000 },
    });
    await client.deliver(a, { idempotencyKey: `${a.submissionId}-r9` });
    await client.deliver(a);
    expect(seen).toEqual([
      {
        key: `${a.submissionId}-r9`,
        body: expect.objectContaining({ submissionId: a.submissionId }),
      },
      { key: a.submissionId, body: expect.objectContaining({ submissionId: a.submissionId }) },
    ]);
  });

  it('when a key names another form, then the sandbox parses only the contract forms', () => {
    const id = a.submissionId;
    expect(parseIdempotencyKey(id, id)).toBeNull();
    expect(parseIdempotencyKey(`${id}-r12`, id)).toBe(12);
    for (const bad of [`${id}-r0`, `${id}-r`, `${id}-r1x`, `${id}-x1`, b.submissionId, ''])
      expect(parseIdempotencyKey(bad, id)).toBeUndefined();
  });
});

describe('sandbox registry and the Idempotency-Key', () => {
  let registry: SandboxRegistry;
  let replaying: SandboxRegistry;
  beforeAll(async () => {
    registry = await startSandboxRegistry();
    replaying = await startSandboxRegistry({ idempotencyReplay: true });
  });
  afterAll(async () => {
    await registry.close();
    await replaying.close();
  });
  beforeEach(() => {
    registry.reset();
    replaying.reset();
  });

  it('when a revert comes with <submissionId>-r<seq>, then it is applied again and its key and sequence are recorded', async () => {
    await post(registry, a, a.submissionId);
    await post(registry, b, b.submissionId);
    const res = await post(registry, a, `${a.submissionId}-r5`);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'updated', submissionId: a.submissionId, version: 3 });
    expect(registry.visits()[0]!.current).toEqual(a);
    expect(registry.submissions().at(-1)).toMatchObject({
      idempotencyKey: `${a.submissionId}-r5`,
      revertSeq: 5,
    });
    // The same revert again (a retry): the version is current, a duplicate.
    const again = await post(registry, a, `${a.submissionId}-r5`);
    expect(again.body).toMatchObject({ status: 'duplicate' });
  });

  it('when the key is neither the submissionId nor <submissionId>-r<seq>, then it is refused (400)', async () => {
    for (const key of [b.submissionId, `${a.submissionId}-r0`, `${a.submissionId}-rx`]) {
      const res = await post(registry, a, key);
      expect(res.status).toBe(400);
      expect(res.body.title).toBe('Idempotency-Key mismatch');
    }
    expect(registry.submissions()).toHaveLength(0);
  });

  it('when idempotencyReplay is on and a key repeats with the same body, then the first answer is replayed without the handler', async () => {
    const first = await post(replaying, a, a.submissionId);
    expect(first).toMatchObject({ status: 201, replayed: null });
    const again = await post(replaying, a, a.submissionId);
    expect(again).toMatchObject({ status: 201, body: first.body, replayed: 'true' });
    expect(replaying.counts()).toMatchObject({ accepted: 1, duplicates: 0, replayed: 1 });
    // The same key with another body: 422 from the idempotency layer.
    const other = await post(replaying, b, a.submissionId);
    expect(other.status).toBe(422);
    expect(replaying.visits()[0]!.current).toEqual(a);
  });

  it('when idempotencyReplay is on, then a revert under the earlier key gets the old 201 and is lost; under -r<seq> it is applied', async () => {
    await post(replaying, a, a.submissionId);
    await post(replaying, b, b.submissionId);
    const stale = await post(replaying, a, a.submissionId);
    // What lhn-bridge accepted before: a `created` naming the same submissionId.
    expect(stale).toMatchObject({
      status: 201,
      body: { status: 'created', submissionId: a.submissionId },
      replayed: 'true',
    });
    expect(replaying.visits()[0]!.current).toEqual(b);
    const revert = await post(replaying, a, `${a.submissionId}-r7`);
    expect(revert).toMatchObject({ status: 200, body: { status: 'updated' }, replayed: null });
    expect(replaying.visits()[0]!.current).toEqual(a);
  });
});

describe('a revert delivered to a registry behind idempotency middleware', () => {
  const centreId = 'c-revert-replay';
  const va = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'mild' });
  const vb = makeVisit({ centreId, patientId: 'p1', encounterId: 'e1', pga: 'severe' });
  let bed: Awaited<ReturnType<typeof startReplayBed>> | undefined;
  afterEach(async () => {
    await bed?.close();
    bed = undefined;
  });

  it('when the visit reverts A -> B -> A, then the registry ends with A (the revert job is keyed by its id)', async () => {
    bed = await startReplayBed({ attempts: 3 });
    await bed.sync(centreId, va, 'run-1');
    await bed.sync(centreId, vb, 'run-2');
    await bed.sync(centreId, va, 'run-3');
    const jobs = await bed.queue.getCompleted();
    const revert = jobs.find(
      (j) => j.id !== va.submissionId && j.data.submission.submissionId === va.submissionId,
    );
    expect(revert?.id).toMatch(new RegExp(`^${va.submissionId}-r\\d+$`));
    expect(revert?.returnvalue).toEqual({ status: 'accepted', httpStatus: 200 });
    const visit = bed.registry.visits().find((v) => v.visitKey === va.visitKey)!;
    expect(visit.current).toEqual(va);
    expect(visit.history).toEqual([va.submissionId, vb.submissionId, va.submissionId]);
    expect(bed.registry.counts().replayed).toBe(0);
    // The job id, then the Redis incarnation it was enqueued in (idempotency-incarnation.test.ts).
    expect(bed.registry.submissions().at(-1)).toMatchObject({
      idempotencyKey: `${revert!.id}.${revert!.data.incarnation}`,
    });
  });

  it('when the revert is sent under the earlier key (as before the fix), then the registry replays the old 201, the job counts it delivered and the registry keeps B', async () => {
    // The client as it was: the submissionId as the key of every delivery, reverts too.
    bed = await startReplayBed({
      wrap: (real) => ({ deliver: (s) => real.deliver(s) }),
      attempts: 3,
    });
    await bed.sync(centreId, va, 'run-1');
    await bed.sync(centreId, vb, 'run-2');
    await bed.sync(centreId, va, 'run-3');
    const jobs = await bed.queue.getCompleted();
    const revert = jobs.find(
      (j) => j.id !== va.submissionId && j.data.submission.submissionId === va.submissionId,
    );
    expect(revert?.returnvalue).toEqual({ status: 'accepted', httpStatus: 201 });
    expect(bed.registry.counts().replayed).toBe(1);
    const visit = bed.registry.visits().find((v) => v.visitKey === va.visitKey)!;
    expect(visit.current).toEqual(vb);
  });
});
