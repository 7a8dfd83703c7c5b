import { afterEach, describe, expect, it } from 'vitest';
import { listedResourceTypes } from '../../src/sync/run-sync.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

describe('resource types listed by a CapabilityStatement', () => {
  it('when the server rest entry lists resources, then their types are returned', () => {
    const types = listedResourceTypes({
      resourceType: 'CapabilityStatement',
      rest: [
        { mode: 'client', resource: [{ type: 'MedicationStatement' }] },
        { mode: 'server', resource: [{ type: 'Patient' }, { type: 'Encounter' }] },
      ],
    });
    expect(types && [...types]).toEqual(['Patient', 'Encounter']);
  });

  it('when the CapabilityStatement lists no resources (or is not one), then nothing is judged from it', () => {
    expect(listedResourceTypes({ resourceType: 'CapabilityStatement' })).toBeUndefined();
    expect(
      listedResourceTypes({ resourceType: 'CapabilityStatement', rest: [{ mode: 'server' }] }),
    ).toBeUndefined();
    expect(
      listedResourceTypes({
        resourceType: 'CapabilityStatement',
        rest: [{ mode: 'server', resource: [] }],
      }),
    ).toBeUndefined();
    expect(listedResourceTypes({ resourceType: 'OperationOutcome' })).toBeUndefined();
    expect(listedResourceTypes(null)).toBeUndefined();
  });
});

describe('sync runs against a CapabilityStatement that leaves configured types out', () => {
  let f: SyncFixture | undefined;
  afterEach(async () => {
    await f?.close();
    f = undefined;
  });

  it('when the statement does not list Encounter, then Encounter is pulled anyway: every visit is sent, and a second full run retracts nothing', async () => {
    f = await startSyncFixture({ patients: 4, seed: 53, centreId: 'cap-no-encounter' });
    f.ehr.faults.set({ capabilityOmitsTypes: ['Encounter'] });
    const truth = f.gen.truth.filter((t) => !t.retracted);
    const first = await f.runSync('full');
    expect(first.status).toBe('succeeded');
    expect(first.counts.enqueued).toBe(truth.length);
    expect(first.warnings).toEqual([
      {
        step: 'server-time',
        message: expect.stringMatching(/does not list Encounter: pulled anyway/),
      },
    ]);
    const second = await f.runSync('full');
    expect(second.status).toBe('succeeded');
    expect(second.counts.retracted).toBe(0);
    expect(second.counts.unchanged).toBe(truth.length);
  });

  it('when a type pulled before drops out of the statement, then it is still pulled, and the run fails if the EHR no longer serves it', async () => {
    f = await startSyncFixture({ patients: 4, seed: 59, centreId: 'cap-dropped-type' });
    expect(f.centre.pull.resourceTypes).toContain('MedicationStatement');
    expect((await f.runSync('full')).status).toBe('succeeded');
    const marksKey = `${f.runtime.prefix}:state:${f.centre.id}:watermarks`;
    const marks = await f.runtime.redis.hgetall(marksKey);
    expect(marks.MedicationStatement).toBeDefined();

    f.ehr.faults.set({ capabilityOmitsTypes: ['MedicationStatement'] });
    f.ehr.requests.length = 0;
    const listedOut = await f.runSync('full');
    expect(listedOut.status).toBe('succeeded');
    expect(listedOut.counts.enqueued).toBe(0);
    expect(f.ehr.requests.some((r) => r.resourceType === 'MedicationStatement')).toBe(true);
    expect(listedOut.warnings).toEqual([
      {
        step: 'server-time',
        message: expect.stringMatching(/does not list MedicationStatement: pulled anyway/),
      },
    ]);

    f.ehr.faults.set({ capabilityOmitsTypes: [], unsupportedTypes: ['MedicationStatement'] });
    const before = await f.runtime.redis.hgetall(marksKey);
    await expect(f.runSync('full')).rejects.toMatchObject({ record: { status: 'failed' } });
    expect(await f.runtime.redis.hgetall(marksKey)).toEqual(before);
  });
});
