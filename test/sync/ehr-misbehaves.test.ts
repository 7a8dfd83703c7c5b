// EHRs that answer searches in ways a sync must not take at face value: one that ignores the
// `patient` parameter (FHIR lets a server ignore a parameter it does not support), and one
// whose paging does not advance while its next links keep changing (a gateway that drops the
// paging state). Neither may put wrong values, or patients outside the cohort, in the registry,
// nor retract visits that still exist.
import { afterEach, describe, expect, it } from 'vitest';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { expectMatchesTruth } from './truth.js';

let f: SyncFixture | undefined;
afterEach(async () => {
  await f?.close();
  f = undefined;
});

describe('an EHR that ignores the patient search parameter', () => {
  it("when every patient's searches return everyone's resources, then the others' are left out, with a run warning, and the registry holds each visit as the generator intended", async () => {
    f = await startSyncFixture({ patients: 4, centreId: 'ehr-no-patient-param' });
    f.ehr.faults.set({ ignoreSearchParams: ['patient'] });
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.enqueued).toBe(truth.length);
    expect(record.warnings).toContainEqual({
      step: 'pull',
      message: expect.stringMatching(
        /^the EHR returned \d+ resource\(s\) of other patients to searches for one patient \(it may ignore the patient search parameter\): they were left out/,
      ),
    });
    await f.deliverAll();
    const visits = f.registry.visits();
    expect(visits).toHaveLength(truth.length);
    for (const t of truth) {
      const stored = visits.find((v) => v.visitKey === f!.visitKey(t.encounterId));
      expectMatchesTruth(stored?.current, t);
      expect(stored?.current?.patient.sex).not.toBe('unknown');
    }
  });
});

describe('an EHR whose paging does not advance', () => {
  it('when every next page repeats the first while the next links change, then the full sync fails saying so, and nothing in the registry is retracted or changed', async () => {
    f = await startSyncFixture({
      patients: 3,
      centreId: 'ehr-stuck-paging',
      centre: { pull: { mode: 'search', pageSize: 2, firstSyncLookbackDays: 36500 } },
    });
    const first = await f.runSync('full');
    expect(first.status).toBe('succeeded');
    await f.deliverAll();
    const before = f.registry.visits().map((v) => ({ key: v.visitKey, version: v.version }));
    expect(before.length).toBeGreaterThan(0);

    f.ehr.faults.set({ stuckPaging: true });
    const error = await f.runSync('full').catch((e: unknown) => e);
    expect((error as Error).message).toMatch(
      /3 pages in a row hold only resources this search already returned .*the EHR's paging does not advance .*cannot be read to its end/,
    );
    await f.deliverAll();
    const after = f.registry.visits();
    expect(after.filter((v) => v.retracted)).toEqual([]);
    expect(after.map((v) => ({ key: v.visitKey, version: v.version }))).toEqual(before);
  });
});
