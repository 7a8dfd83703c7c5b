// Bulk exports the run cannot trust as they come: one whose data files are known to be
// incomplete (a file cut short) must send nothing built from it; an error OperationOutcome
// alone fails the run without holding back the visits; and a Group export that holds
// patients outside the Group must not send theirs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pseudonymKey } from '../../src/registry/keys.js';
import type { RunRecord } from '../../src/sync/run-store.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';
import { SECRET } from './helpers.js';

const registryState = (f: SyncFixture) =>
  f.registry
    .visits()
    .map((v) => ({ key: v.visitKey, version: v.version, retracted: v.retracted ?? false }))
    .sort((a, b) => a.key.localeCompare(b.key));

const failedRun = async (f: SyncFixture, mode: 'full' | 'incremental'): Promise<RunRecord> => {
  const err = (await f.runSync(mode).catch((e: unknown) => e)) as Error & { record?: RunRecord };
  expect(err.name).toBe('SyncFailedError');
  return err.record!;
};

/** A run with these sandbox faults on, which must fail; the faults are reset after it. */
const failedRunWith = async (
  f: SyncFixture,
  mode: 'full' | 'incremental',
  faults: Parameters<SyncFixture['ehr']['faults']['set']>[0],
): Promise<RunRecord> => {
  f.ehr.faults.set(faults);
  try {
    return await failedRun(f, mode);
  } finally {
    f.ehr.faults.reset();
  }
};

describe('bulk sync of an export known to be incomplete', () => {
  let f: SyncFixture;
  const watermarks = () =>
    f.runtime.redis.hgetall(`${f.runtime.prefix}:state:${f.centre.id}:watermarks`);
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, centreId: 'bulk-incomplete', pullMode: 'bulk' });
    expect((await f.runSync('full')).status).toBe('succeeded');
    await f.deliverAll();
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the Observation file is cut short, then the full run fails and the registry keeps every visit as it was', async () => {
    const before = registryState(f);
    const marks = await watermarks();
    const record = await failedRunWith(f, 'full', {
      truncateExportFile: { resourceType: 'Observation', keepLines: 10 },
    });
    expect(record.errors.map((e) => e.message).join('\n')).toMatch(
      /the EHR announced \d+ Observation resources in export file \d+ \(of \d+\) and sent 10:.*nothing is retracted/,
    );
    expect(record.counts).toMatchObject({ mapped: 0, enqueued: 0, retracted: 0 });
    await f.deliverAll();
    expect(registryState(f)).toEqual(before);
    expect(await watermarks()).toEqual(marks);
  });

  it('when the export lists an error OperationOutcome and its files are whole, then the run fails (nothing retracted, watermarks kept) but the visits are still mapped', async () => {
    const marks = await watermarks();
    const record = await failedRunWith(f, 'full', {
      exportNotices: [{ severity: 'error', text: 'Observation export failed for some patients' }],
    });
    expect(record.errors.map((e) => e.message).join('\n')).toMatch(/export error file/);
    // One restricted chart the EHR cannot export must not hold back every patient, every run.
    expect(record.counts.mapped).toBeGreaterThan(0);
    expect(record.counts).toMatchObject({ retracted: 0 });
    expect(await watermarks()).toEqual(marks);
  });

  it('when the export lists an error OperationOutcome and a file is cut short, then the full run fails and sends nothing', async () => {
    const before = registryState(f);
    const marks = await watermarks();
    const record = await failedRunWith(f, 'full', {
      truncateExportFile: { resourceType: 'Observation', keepLines: 10 },
      exportNotices: [{ severity: 'error', text: 'Observation export failed for some patients' }],
    });
    expect(record.errors.map((e) => e.message).join('\n')).toMatch(/export error file/);
    expect(record.counts).toMatchObject({ enqueued: 0, retracted: 0 });
    await f.deliverAll();
    expect(registryState(f)).toEqual(before);
    expect(await watermarks()).toEqual(marks);
  });

  it('when an incremental export is cut short, then the run fails and sends nothing', async () => {
    const before = registryState(f);
    const marks = await watermarks();
    // A change, so that the incremental export has Observations to cut.
    const obs = [...f.gen.resources()].find((r) => r.resourceType === 'Observation')!;
    f.ehr.upsert({ ...f.ehr.get('Observation', obs.id)!, status: 'amended' } as never);
    // And a deletion, which the export's partial deleted list must not retract either.
    const gone = f.gen.truth.find((t) => !t.retracted)!;
    expect(f.ehr.delete('Encounter', gone.encounterId)).toBe(true);
    const record = await failedRunWith(f, 'incremental', {
      truncateExportFile: { resourceType: 'Observation', keepLines: 0 },
    });
    expect(record.mode).toBe('incremental');
    expect(record.counts).toMatchObject({ enqueued: 0, retracted: 0 });
    await f.deliverAll();
    expect(registryState(f)).toEqual(before);
    expect(await watermarks()).toEqual(marks);
  });
});

describe('bulk sync of a Group export that ignores the Group', () => {
  let f: SyncFixture;
  let outsiderKey: string;
  const outsiderVisits = () =>
    f.registry.visits().filter((v) => v.current?.patientKey === outsiderKey).length;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 4, centreId: 'bulk-group-ignored', pullMode: 'bulk' });
    const ids = f.gen.patientIds;
    const outsider = ids[ids.length - 1]!;
    outsiderKey = pseudonymKey(SECRET, f.centre.id, 'Patient', outsider);
    expect(f.gen.truthOfPatient(outsider).filter((t) => !t.retracted).length).toBeGreaterThan(0);
    // A new version of the Group without the last patient.
    f.ehr.upsert({
      resourceType: 'Group',
      id: f.gen.groupId,
      type: 'person',
      actual: true,
      member: ids.slice(0, -1).map((id) => ({ entity: { reference: `Patient/${id}` } })),
    });
    f.ehr.faults.set({ exportIgnoresGroup: true });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when the full export holds a patient outside the Group, then no visit of theirs reaches the registry and the run warns', async () => {
    const record = await f.runSync('full');
    expect(record.status).toBe('succeeded');
    const inCohort = f.gen.truth.filter(
      (t) => !t.retracted && t.patientId !== f.gen.patientIds[f.gen.patientIds.length - 1],
    );
    expect(record.counts.enqueued).toBe(inCohort.length);
    expect(record.warnings?.map((w) => w.message).join('\n')).toMatch(
      /export of the cohort Group held 1 patient\(s\) who are not members of the Group \(\d+ resource\(s\)/,
    );
    await f.deliverAll();
    expect(f.registry.visits()).toHaveLength(inCohort.length);
    expect(outsiderVisits()).toBe(0);
  });

  it('when the outsider changes, then the incremental export does not pull them again and the run warns', async () => {
    const outsider = f.gen.patientIds[f.gen.patientIds.length - 1]!;
    const enc = [...f.gen.resources()].find(
      (r) =>
        r.resourceType === 'Encounter' &&
        (r as { subject?: { reference?: string } }).subject?.reference === `Patient/${outsider}`,
    )!;
    f.ehr.upsert({ ...f.ehr.get('Encounter', enc.id)!, status: 'finished' } as never);
    const record = await f.runSync('incremental');
    expect(record).toMatchObject({ status: 'succeeded', mode: 'incremental' });
    expect(record.counts.enqueued).toBe(0);
    expect(record.warnings?.map((w) => w.message).join('\n')).toMatch(
      /export of the cohort Group held 1 patient\(s\) who are not members of the Group/,
    );
    await f.deliverAll();
    expect(outsiderVisits()).toBe(0);
  });
});

describe('bulk sync whose file downloads keep breaking off', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 2, centreId: 'bulk-file-drops', pullMode: 'bulk' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when every download of a file breaks off, then the run fails naming the file, the lines read and the attempts, with a hint', async () => {
    const record = await failedRunWith(f, 'full', {
      dropConnection: { count: 50, kinds: ['file'] },
    });
    const message = record.errors.map((e) => e.message).join('\n');
    expect(message).toMatch(
      /the download of the Patient export file 1 \(of \d+\) broke off 4 time\(s\) \([A-Z_]+; 0 line\(s\) read\)\. .*ask centre IT/,
    );
    expect(message).not.toMatch(/https?:|bulkfiles/);
    expect(record.counts).toMatchObject({ mapped: 0, enqueued: 0 });
  });
});
