import { afterEach, describe, expect, it } from 'vitest';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import type { SandboxResource, StartSandboxEhrOptions } from '../../src/sandbox/ehr/index.js';
import { startSandboxWithCentre, type SandboxFixture } from '../auth/helpers.js';

interface Manifest {
  transactionTime: string;
  request: string;
  requiresAccessToken: boolean;
  output: { type: string; url: string; count: number }[];
  error: { type: string; url: string; count: number }[];
  deleted: { type: string; url: string; count: number }[];
}

let fixture: SandboxFixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

const old = '2024-01-01T00:00:00.000Z';

function centreResources(): SandboxResource[] {
  const out: SandboxResource[] = [];
  for (const p of ['p1', 'p2', 'p3']) {
    out.push({ resourceType: 'Patient', id: p, meta: { lastUpdated: old } });
    out.push({
      resourceType: 'Encounter',
      id: `e-${p}`,
      meta: { lastUpdated: old },
      subject: { reference: `Patient/${p}` },
    });
    for (let i = 0; i < 3; i++)
      out.push({
        resourceType: 'Observation',
        id: `o-${p}-${i}`,
        meta: { lastUpdated: old },
        subject: { reference: `Patient/${p}` },
        code: { coding: [{ system: 'http://loinc.org', code: i === 0 ? '8302-2' : '29463-7' }] },
      });
    out.push({
      resourceType: 'MedicationRequest',
      id: `mr-${p}`,
      meta: { lastUpdated: old },
      subject: { reference: `Patient/${p}` },
      medicationReference: { reference: `Medication/med-${p}` },
    });
    out.push({ resourceType: 'Medication', id: `med-${p}`, meta: { lastUpdated: old } });
  }
  out.push({ resourceType: 'Medication', id: 'med-unused', meta: { lastUpdated: old } });
  out.push({
    resourceType: 'Group',
    id: 'ibd',
    meta: { lastUpdated: old },
    member: [{ entity: { reference: 'Patient/p1' } }, { entity: { reference: 'Patient/p2' } }],
  });
  return out;
}

async function setup(ehrOptions: StartSandboxEhrOptions = {}) {
  fixture = await startSandboxWithCentre({ resources: centreResources(), ehr: ehrOptions });
  const token = (await createSmartAuth({ centre: fixture.centre }).getAccessToken()).token;
  const auth = { authorization: `Bearer ${token}` };
  const ehr = fixture.ehr;
  const kickOff = async (
    path: string,
    headers: Record<string, string> = { prefer: 'respond-async', accept: 'application/fhir+json' },
  ) => fetch(`${ehr.baseUrl}/${path}`, { headers: { ...auth, ...headers } });
  /** Kicks off and polls until the manifest; returns it and the 202 answers seen. */
  const runExport = async (path: string) => {
    const res = await kickOff(path);
    expect(res.status).toBe(202);
    const status = res.headers.get('content-location')!;
    const progress: { retryAfter: string | null; xProgress: string | null }[] = [];
    for (let i = 0; i < 20; i++) {
      const poll = await fetch(status, { headers: auth });
      if (poll.status === 202) {
        progress.push({
          retryAfter: poll.headers.get('retry-after'),
          xProgress: poll.headers.get('x-progress'),
        });
        continue;
      }
      expect(poll.status).toBe(200);
      return { manifest: (await poll.json()) as Manifest, status, progress };
    }
    throw new Error('export did not finish');
  };
  const download = async (url: string) => {
    const res = await fetch(url, { headers: auth });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/fhir+ndjson');
    return (await res.text())
      .split('\n')
      .filter((l) => l.length > 0)
      .map(
        (l) =>
          JSON.parse(l) as {
            resourceType: string;
            id: string;
            entry?: { request: { method: string; url: string } }[];
          },
      );
  };
  return { ehr, auth, kickOff, runExport, download };
}

describe('sandbox EHR Bulk Data export', () => {
  it("when a Group export runs, then polling shows progress and the manifest lists the members' resources as NDJSON", async () => {
    const { ehr, runExport, download } = await setup({
      exportPollsBeforeDone: 2,
      exportRetryAfterSeconds: 3,
    });
    const { manifest, progress } = await runExport('Group/ibd/$export');
    expect(progress).toHaveLength(2);
    expect(progress[0]).toMatchObject({ retryAfter: '3', xProgress: expect.stringMatching(/%/) });
    expect(manifest.requiresAccessToken).toBe(true);
    expect(manifest.request).toBe(`${ehr.baseUrl}/Group/ibd/$export`);
    expect(Date.parse(manifest.transactionTime)).not.toBeNaN();
    const counts = Object.fromEntries(manifest.output.map((o) => [o.type, o.count]));
    expect(counts).toEqual({
      Patient: 2,
      Encounter: 2,
      Observation: 6,
      MedicationRequest: 2,
      Medication: 2,
    });
    const meds = await download(manifest.output.find((o) => o.type === 'Medication')!.url);
    expect(meds.map((m) => m.id).sort()).toEqual(['med-p1', 'med-p2']);
    const patients = await download(manifest.output.find((o) => o.type === 'Patient')!.url);
    expect(patients.map((p) => p.id)).toEqual(['p1', 'p2']);
    expect(manifest.deleted).toEqual([]);
    expect(manifest.error).toEqual([]);
  });

  it('when the kick-off lacks Prefer: respond-async, then it is refused with an OperationOutcome', async () => {
    const { kickOff } = await setup();
    const res = await kickOff('Group/ibd/$export', { accept: 'application/fhir+json' });
    expect(res.status).toBe(400);
    expect(JSON.stringify(await res.json())).toMatch(/respond-async/);
  });

  it('when the Group does not exist, then the kick-off answers 404', async () => {
    const { kickOff } = await setup();
    expect((await kickOff('Group/nope/$export')).status).toBe(404);
  });

  it('when _type and _typeFilter are given, then only those types and matching resources are exported', async () => {
    const { runExport, download } = await setup();
    const filter = encodeURIComponent('Observation?code=http://loinc.org|8302-2');
    const { manifest } = await runExport(
      `Patient/$export?_type=Patient,Observation&_typeFilter=${filter}`,
    );
    expect(manifest.output.map((o) => [o.type, o.count])).toEqual([
      ['Patient', 3],
      ['Observation', 3],
    ]);
    const obs = await download(manifest.output[1]!.url);
    expect(obs.map((o) => o.id).sort()).toEqual(['o-p1-0', 'o-p2-0', 'o-p3-0']);
  });

  it('when a _typeFilter uses an unsupported parameter, then the manifest has an error file saying so', async () => {
    const { runExport, download } = await setup();
    const { manifest } = await runExport(
      `Patient/$export?_type=Observation&_typeFilter=${encodeURIComponent('Observation?foo=bar')}`,
    );
    expect(manifest.error).toHaveLength(1);
    const [outcome] = await download(manifest.error[0]!.url);
    expect(JSON.stringify(outcome)).toMatch(/foo is not supported/);
  });

  it('when _since is given after changes and deletions, then only changed resources are output and deletions are listed as DELETE bundles', async () => {
    const { ehr, runExport, download } = await setup();
    const first = await runExport('Group/ibd/$export');
    const since = first.manifest.transactionTime;
    ehr.upsert({
      resourceType: 'Observation',
      id: 'o-p1-1',
      subject: { reference: 'Patient/p1' },
    });
    ehr.delete('Observation', 'o-p2-2');
    ehr.delete('Observation', 'o-p3-0'); // p3 is not in the group: not reported
    const { manifest } = await runExport(`Group/ibd/$export?_since=${encodeURIComponent(since)}`);
    expect(manifest.output.map((o) => [o.type, o.count])).toEqual([['Observation', 1]]);
    expect((await download(manifest.output[0]!.url))[0]!.id).toBe('o-p1-1');
    expect(manifest.deleted).toHaveLength(1);
    expect(manifest.deleted[0]!.type).toBe('Bundle');
    const deleted = await download(manifest.deleted[0]!.url);
    expect(deleted).toEqual([
      {
        resourceType: 'Bundle',
        type: 'transaction',
        entry: [{ request: { method: 'DELETE', url: 'Observation/o-p2-2' } }],
      },
    ]);
  });

  it('when a Patient-level export has _since, then deletions of every patient are listed, Patients included', async () => {
    const { ehr, runExport, download } = await setup();
    const since = (await runExport('Patient/$export?_type=Patient')).manifest.transactionTime;
    ehr.delete('Patient', 'p3');
    ehr.delete('Encounter', 'e-p3');
    const { manifest } = await runExport(
      `Patient/$export?_type=Patient,Encounter&_since=${encodeURIComponent(since)}`,
    );
    expect(manifest.output).toEqual([]);
    const deleted = (await download(manifest.deleted[0]!.url)).map((b) => b.entry![0]!.request.url);
    expect(deleted).toEqual(['Patient/p3', 'Encounter/e-p3']);
  });

  it('when the status URL gets DELETE, then the job is cancelled and the status URL answers 404', async () => {
    const { kickOff, auth } = await setup({ exportPollsBeforeDone: 5 });
    const status = (await kickOff('Group/ibd/$export')).headers.get('content-location')!;
    expect((await fetch(status, { headers: auth })).status).toBe(202);
    expect((await fetch(status, { method: 'DELETE', headers: auth })).status).toBe(202);
    expect((await fetch(status, { headers: auth })).status).toBe(404);
  });

  it('when a file is fetched without the token, then it is refused (requiresAccessToken)', async () => {
    const { runExport } = await setup();
    const { manifest } = await runExport('Patient/$export?_type=Patient');
    expect((await fetch(manifest.output[0]!.url)).status).toBe(401);
  });

  it('when files exceed the per-file line limit, then the output is split with counts per file', async () => {
    const { runExport, download } = await setup({ exportMaxLinesPerFile: 4 });
    const { manifest } = await runExport('Patient/$export?_type=Observation');
    expect(manifest.output.map((o) => o.count)).toEqual([4, 4, 1]);
    const all = (await Promise.all(manifest.output.map((o) => download(o.url)))).flat();
    expect(new Set(all.map((r) => r.id)).size).toBe(9);
  });

  it('when the token lacks a scope for a requested _type, then the kick-off is forbidden', async () => {
    fixture = await startSandboxWithCentre({
      resources: centreResources(),
      centre: { scopes: ['system/Patient.rs', 'system/Group.rs'] },
    });
    const token = (await createSmartAuth({ centre: fixture.centre }).getAccessToken()).token;
    const res = await fetch(`${fixture.ehr.baseUrl}/Group/ibd/$export?_type=Observation`, {
      headers: { authorization: `Bearer ${token}`, prefer: 'respond-async' },
    });
    expect(res.status).toBe(403);
  });
});
