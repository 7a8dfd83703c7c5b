// Bulk kick-off refusals (HTTP 400) against the sandbox EHR: a refused `_typeFilter` that
// quotes a filtered type back must not drop that type, and a type the export refuses as not
// supported is left out with a warning in the run record.
import { afterEach, describe, expect, it } from 'vitest';
import { startSyncFixture, type SyncFixture } from './fixture.js';

describe('bulk kick-off refusals', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  const kickOffs = (fx: SyncFixture) =>
    fx.ehr.requests
      .filter((r) => r.kind === 'export' && r.status === 202)
      .map((r) => new URL(r.url, fx.ehr.origin));

  it('when the EHR refuses _typeFilter with "Invalid _typeFilter value: Encounter?..." (code invalid), then the export runs without _typeFilter and keeps every type', async () => {
    f = await startSyncFixture({
      patients: 4,
      seed: 41,
      centreId: 'bulk-tf-invalid',
      pullMode: 'bulk',
    });
    f.ehr.faults.set({ typeFilter: 'reject-invalid' });
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.counts.enqueued).toBe(truth.length);
    expect(record.warnings ?? []).toEqual([]);
    const accepted = kickOffs(f).at(-1)!;
    expect(accepted.searchParams.has('_typeFilter')).toBe(false);
    expect(accepted.searchParams.get('_type')!.split(',')).toEqual(f.centre.pull.resourceTypes);
  });

  it('when the export refuses a configured type as not supported (the CapabilityStatement lists it), then it is exported without and the run record says so', async () => {
    f = await startSyncFixture({
      patients: 4,
      seed: 43,
      centreId: 'bulk-unsupported',
      pullMode: 'bulk',
    });
    expect(f.centre.pull.resourceTypes).toContain('MedicationStatement');
    f.ehr.faults.set({ exportUnsupportedTypes: ['MedicationStatement'] });
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    expect(record.warnings).toEqual([
      {
        step: 'export',
        message: expect.stringMatching(/refused MedicationStatement as not supported/),
      },
    ]);
  });

  it('when the export refuses Observation as not supported, then the kick-off fails instead of exporting without it', async () => {
    f = await startSyncFixture({
      patients: 2,
      seed: 47,
      centreId: 'bulk-no-obs',
      pullMode: 'bulk',
    });
    f.ehr.faults.set({ exportUnsupportedTypes: ['Observation'] });
    await expect(f.runSync('full')).rejects.toMatchObject({
      record: { status: 'failed', errors: [expect.objectContaining({ step: 'export' })] },
    });
    const marks = await f.runtime.redis.hgetall(
      `${f.runtime.prefix}:state:${f.centre.id}:watermarks`,
    );
    expect(marks).toEqual({});
  });
});
