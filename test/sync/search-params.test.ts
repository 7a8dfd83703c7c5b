// A sync against an EHR that, like Epic, refuses Observation searches without a category
// or code: the centre file's pull.searches supplies them and every visit still arrives.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SyncFailedError } from '../../src/sync/run-sync.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { expectMatchesTruth } from './truth.js';

const CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';

describe('sync with per-type search parameters', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({
      patients: 6,
      seed: 23,
      centreId: 'sync-searches',
      centre: {
        pull: {
          mode: 'search',
          pageSize: 100,
          firstSyncLookbackDays: 36500,
          // The generator files PGA under exam and vitals under vital-signs.
          searches: {
            Observation: [{ category: `${CATEGORY}|vital-signs` }, { category: 'exam' }],
          },
        },
      },
    });
    f.ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the EHR requires a category and the centre file gives two, then the full sync delivers every expected visit', async () => {
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.enqueued).toBe(truth.length);
    const observationSearches = f.ehr.requests.filter(
      (r) => r.kind === 'search' && r.resourceType === 'Observation',
    );
    expect(observationSearches.length).toBeGreaterThan(0);
    expect(observationSearches.every((r) => r.status === 200 && r.url.includes('category='))).toBe(
      true,
    );
    await f.deliverAll();
    const visits = f.registry.visits();
    expect(visits).toHaveLength(truth.length);
    for (const t of truth)
      expectMatchesTruth(visits.find((v) => v.visitKey === f.visitKey(t.encounterId))?.current, t);
  });

  it.each(['honoured', 'first-only'] as const)(
    'when the centre pulls in bulk mode with the same searches (the EHR reads _typeFilter: %s), then they go as one _typeFilter value, narrow the export, and every expected visit still arrives',
    async (typeFilter) => {
      const bulk = await startSyncFixture({
        patients: 4,
        seed: 29,
        centreId: 'sync-searches-bulk',
        centre: {
          pull: {
            mode: 'bulk',
            pageSize: 100,
            firstSyncLookbackDays: 36500,
            searches: {
              Observation: [{ category: `${CATEGORY}|vital-signs` }, { category: 'exam' }],
            },
          },
        },
      });
      try {
        if (typeFilter === 'first-only') bulk.ehr.faults.set({ typeFilter });
        const truth = bulk.gen.truth.filter((t) => !t.retracted);
        const record = await bulk.runSync('full');
        expect(record.status).toBe('succeeded');
        const kickOff = bulk.ehr.requests.find((r) => r.kind === 'export')!;
        const filters = new URL(kickOff.url, 'http://x').searchParams.getAll('_typeFilter');
        expect(filters).toHaveLength(1);
        expect(filters[0]!.split(/,(?=[A-Z][A-Za-z]+\?)/)).toEqual([
          expect.stringMatching(/^Encounter\?_lastUpdated=ge/),
          expect.stringMatching(/^Observation\?category=.*vital-signs&_lastUpdated=ge/),
          expect.stringMatching(/^Observation\?category=exam&_lastUpdated=ge/),
        ]);
        await bulk.deliverAll();
        const visits = bulk.registry.visits();
        expect(visits).toHaveLength(truth.length);
        for (const t of truth)
          expectMatchesTruth(
            visits.find((v) => v.visitKey === bulk.visitKey(t.encounterId))?.current,
            t,
          );
      } finally {
        await bulk.close();
      }
    },
  );

  it('when the centre file names no searches for Observation, then the same EHR fails the run and the watermark stays', async () => {
    const plain = await startSyncFixture({ patients: 2, seed: 23, centreId: 'sync-no-searches' });
    try {
      plain.ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
      const err = await plain.runSync('full').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SyncFailedError);
      const record = (err as SyncFailedError).record;
      expect(record.status).toBe('failed');
      expect(record.errors[0]).toMatchObject({ step: 'pull' });
      expect(record.errors[0]!.message).toMatch(/HTTP 400[\s\S]*pull\.searches/);
      expect(
        await plain.runtime.redis.hgetall(
          `${plain.runtime.prefix}:state:${plain.centre.id}:watermarks`,
        ),
      ).toEqual({});
    } finally {
      await plain.close();
    }
  });
});
