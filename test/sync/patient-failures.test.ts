import { afterEach, describe, expect, it } from 'vitest';
import { pseudonymKey } from '../../src/registry/keys.js';
import type { RunRecord } from '../../src/sync/run-store.js';
import { SECRET } from './helpers.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

/** The failed run's record (syncCentre throws SyncFailedError with it attached). */
async function failedRun(f: SyncFixture): Promise<RunRecord> {
  const err = (await f.runSync('full').catch((e: unknown) => e)) as { record?: RunRecord };
  expect(err.record?.status).toBe('failed');
  return err.record!;
}

describe('search pull with a patient whose searches the EHR refuses (Epic 4118, restricted record)', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  it('when one patient answers 403 / 4118, then everyone else is synced, that patient is named by cohort position and pseudonymous key only, and the run fails while the watermarks move (the patient is pulled in full next time)', async () => {
    f = await startSyncFixture({ patients: 6, seed: 71, centreId: 'restricted-one' });
    const visits = f.gen.truth.filter((t) => !t.retracted);
    const ids = f.gen.patientIds;
    const restricted = ids.find(
      (id, i) => i > 0 && i < ids.length - 1 && visits.some((v) => v.patientId === id),
    )!;
    const others = visits.filter((v) => v.patientId !== restricted);

    const first = await f.runSync('full');
    expect(first.counts.enqueued).toBe(visits.length);
    const marksKey = `${f.runtime.prefix}:state:${f.centre.id}:watermarks`;
    const marks = await f.runtime.redis.hgetall(marksKey);

    // A changed visit of another patient must still go out while the restricted one fails.
    f.ehr.faults.set({
      restrictedPatients: { ids: [restricted], resourceType: 'Observation' },
    });
    f.ehr.requests.length = 0;
    // The EHR's Date header has whole seconds: a later second, so a moved watermark shows.
    await new Promise((r) => setTimeout(r, 1100));
    const record = await failedRun(f);
    expect(record.counts.retracted).toBe(0);
    expect(record.counts.unchanged).toBe(others.length);
    // Patients after the restricted one were asked for too.
    const last = encodeURIComponent(ids[ids.length - 1]!);
    expect(
      f.ehr.requests.some((r) => r.resourceType === 'Observation' && r.url.includes(`=${last}`)),
    ).toBe(true);
    const key = pseudonymKey(SECRET, f.centre.id, 'Patient', restricted);
    const index = ids.indexOf(restricted);
    expect(record.errors).toEqual([
      {
        step: 'pull',
        message: expect.stringContaining(
          `1 of ${ids.length} patients could not be read and were left out of this run`,
        ),
      },
    ]);
    const message = record.errors[0]!.message;
    expect(message).toContain(
      `#${index + 1} (patient key ${key}): HTTP 403 on the Observation search (OperationOutcome: fatal security: urn:oid:1.2.840.114350.1.13.0.1.7.2.657369|4118`,
    );
    expect(message).not.toContain(restricted);
    // The others' progress is marked; the restricted patient is left for a full pull.
    const moved = await f.runtime.redis.hgetall(marksKey);
    expect(Object.keys(moved).sort()).toEqual(Object.keys(marks).sort());
    expect(moved.Observation! > marks.Observation!).toBe(true);
  });

  it('when one patient is refused on a first sync, then every other patient’s visits are enqueued', async () => {
    f = await startSyncFixture({ patients: 6, seed: 73, centreId: 'restricted-first' });
    const visits = f.gen.truth.filter((t) => !t.retracted);
    const restricted = f.gen.patientIds[1]!;
    f.ehr.faults.set({ restrictedPatients: { ids: [restricted] } });
    const record = await failedRun(f);
    expect(record.counts.enqueued).toBe(visits.filter((v) => v.patientId !== restricted).length);
    expect(record.errors[0]!.message).toMatch(
      /^1 of 6 patients could not be read.*#2 \(patient key [0-9a-f]{64}\): HTTP 403/,
    );
  });

  it('when the first 5 patients in a row are refused, then the pull stops as systemic and names no patient', async () => {
    f = await startSyncFixture({ patients: 8, seed: 79, centreId: 'restricted-all' });
    f.ehr.faults.set({ restrictedPatients: { ids: [...f.gen.patientIds] } });
    const record = await failedRun(f);
    expect(record.counts.enqueued).toBe(0);
    const pullError = record.errors.find((e) => /so the pull stopped/.test(e.message));
    expect(pullError?.message).toMatch(
      /the EHR refused the searches of 5 of the 5 patients read so far \(every one\), so the pull stopped/,
    );
    for (const e of record.errors)
      for (const id of f.gen.patientIds) expect(e.message).not.toContain(id);
  });
});
