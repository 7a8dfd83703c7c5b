import { describe, expect, it } from 'vitest';
import { createRunStore, type QualityReport } from '../../src/sync/run-store.js';
import { useTestRedis } from './redis-scope.js';

describe('run store', () => {
  const { redis, prefix } = useTestRedis();

  it('when a run starts, updates and finishes, then get returns the final record with counts', async () => {
    const store = createRunStore(redis, prefix);
    const run = await store.start({ centreId: 'c1', mode: 'full', reason: 'manual' });
    expect(run.status).toBe('running');
    await store.update(run.runId, { phase: 'pull' });
    const counts = { pulled: 10, mapped: 10, visits: 3, enqueued: 2, unchanged: 1, retracted: 0 };
    await store.finish(run.runId, {
      status: 'succeeded',
      counts,
      findingsByKind: { 'missing-pga': 1 },
    });
    const got = await store.get(run.runId);
    expect(got).toMatchObject({ status: 'succeeded', counts, phase: 'done' });
    expect(got!.findingsByKind).toEqual({ 'missing-pga': 1 });
    expect(got!.endedAt).toBeDefined();
  });

  it('when runs succeed and fail, then latest and latestSuccess tell them apart', async () => {
    const store = createRunStore(redis, prefix);
    const ok = await store.start({ centreId: 'c2', mode: 'full', reason: 'schedule' });
    await store.finish(ok.runId, { status: 'succeeded' });
    await new Promise((r) => setTimeout(r, 5));
    const bad = await store.start({ centreId: 'c2', mode: 'incremental', reason: 'schedule' });
    await store.finish(bad.runId, {
      status: 'failed',
      errors: [{ step: 'pull', message: 'EHR unreachable' }],
    });
    expect((await store.latest('c2'))!.runId).toBe(bad.runId);
    expect((await store.latestSuccess('c2'))!.runId).toBe(ok.runId);
  });

  it('when listing, then runs come most recent first, filtered by centre and limited', async () => {
    const store = createRunStore(redis, prefix);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await store.start({ centreId: 'c3', mode: 'full', reason: 'manual' })).runId);
      await new Promise((r) => setTimeout(r, 5));
    }
    const list = await store.list({ centreId: 'c3', limit: 2 });
    expect(list.map((r) => r.runId)).toEqual([ids[2], ids[1]]);
    const all = await store.list({ limit: 1000 });
    expect(all.some((r) => r.centreId === 'c2')).toBe(true);
  });

  it('when more runs than kept are recorded, then the oldest are trimmed but the latest success stays', async () => {
    const store = createRunStore(redis, prefix, { keepPerCentre: 2 });
    const first = await store.start({ centreId: 'c4', mode: 'full', reason: 'manual' });
    await store.finish(first.runId, { status: 'succeeded' });
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 5));
      const r = await store.start({ centreId: 'c4', mode: 'full', reason: 'manual' });
      await store.finish(r.runId, { status: 'failed' });
    }
    const list = await store.list({ centreId: 'c4' });
    expect(list.length).toBe(3);
    expect((await store.latestSuccess('c4'))!.runId).toBe(first.runId);
  });

  it('when a queued run is picked up, then its start time moves to when it started running', async () => {
    const store = createRunStore(redis, prefix);
    const queued = await store.start({
      centreId: 'c5',
      mode: 'full',
      reason: 'manual',
      status: 'queued',
    });
    await new Promise((r) => setTimeout(r, 20));
    const running = await store.update(queued.runId, { status: 'running' });
    expect(running!.status).toBe('running');
    expect(Date.parse(running!.startedAt)).toBeGreaterThan(Date.parse(queued.startedAt));
  });

  it('when a quality report is saved, then it is read back per centre', async () => {
    const store = createRunStore(redis, prefix);
    const report: QualityReport = {
      centreId: 'c6',
      runId: 'r1',
      generatedAt: new Date().toISOString(),
      visits: 2,
      unmappedCodes: [
        { field: 'pga', code: 'http://x|Q9', count: 2, exampleResource: 'Observation/o1' },
      ],
      visitsWithoutPga: { count: 1, exampleResources: ['Encounter/e1'] },
      implausibleValues: [],
      findingsByKind: { 'unmapped-code': 2, 'missing-pga': 1 },
    };
    await store.saveQualityReport(report);
    expect(await store.getQualityReport('c6')).toEqual(report);
    expect(await store.getQualityReport('nope')).toBeUndefined();
  });
});
