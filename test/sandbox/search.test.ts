import { afterEach, describe, expect, it } from 'vitest';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import type { SandboxResource } from '../../src/sandbox/ehr/index.js';
import { startSandboxWithCentre, type SandboxFixture } from '../auth/helpers.js';

interface Bundle {
  resourceType: string;
  type: string;
  total?: number;
  link?: { relation: string; url: string }[];
  entry?: {
    fullUrl?: string;
    resource: {
      resourceType: string;
      id: string;
      meta: { versionId: string; lastUpdated: string };
    };
    search: { mode: string };
  }[];
}

let fixture: SandboxFixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

function observation(
  id: string,
  patient: string,
  lastUpdated: string,
  code = '8302-2',
): SandboxResource {
  return {
    resourceType: 'Observation',
    id,
    meta: { versionId: '1', lastUpdated },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code }] },
    subject: { reference: `Patient/${patient}` },
  };
}

async function setup(
  resources: SandboxResource[],
  centre: Parameters<typeof startSandboxWithCentre>[0] = {},
) {
  fixture = await startSandboxWithCentre({ resources, ...centre });
  const token = (await createSmartAuth({ centre: fixture.centre }).getAccessToken()).token;
  const get = async (pathOrUrl: string, headers: Record<string, string> = {}) => {
    const url = pathOrUrl.startsWith('http') ? pathOrUrl : `${fixture!.ehr.baseUrl}/${pathOrUrl}`;
    return fetch(url, { headers: { authorization: `Bearer ${token}`, ...headers } });
  };
  const bundle = async (path: string) => {
    const res = await get(path);
    expect(res.status).toBe(200);
    return (await res.json()) as Bundle;
  };
  /** Follows next links; returns the ids of every page. */
  const allPages = async (path: string) => {
    const pages: string[][] = [];
    let next: string | undefined = path;
    while (next) {
      const b = await bundle(next);
      pages.push(
        (b.entry ?? []).filter((e) => e.search.mode === 'match').map((e) => e.resource.id),
      );
      next = b.link?.find((l) => l.relation === 'next')?.url;
    }
    return pages;
  };
  return { ehr: fixture.ehr, token, get, bundle, allPages };
}

const day = (d: number) => `2024-03-${String(d).padStart(2, '0')}T10:00:00.000Z`;

describe('sandbox EHR search', () => {
  it('when a search has more matches than _count, then next links page through all of them once, in a stable order', async () => {
    const resources = [
      { resourceType: 'Patient', id: 'p1' },
      { resourceType: 'Patient', id: 'p2' },
      ...Array.from({ length: 120 }, (_, i) =>
        observation(`o${i}`, i % 3 === 0 ? 'p2' : 'p1', day(1)),
      ),
    ];
    const { allPages } = await setup(resources);
    const pages = await allPages('Observation?patient=p1&_count=25');
    const expected = Array.from({ length: 120 }, (_, i) => i)
      .filter((i) => i % 3 !== 0)
      .map((i) => `o${i}`);
    expect(pages.map((p) => p.length)).toEqual([25, 25, 25, 5]);
    expect(pages.flat()).toEqual(expected);
    // subject=Patient/p2 is the same search by another name.
    expect((await allPages('Observation?subject=Patient/p2&_count=100')).flat()).toHaveLength(40);
  });

  it('when resources change between pages, then paging neither repeats nor skips the ones already listed', async () => {
    const resources = Array.from({ length: 30 }, (_, i) => observation(`o${i}`, 'p1', day(1)));
    const { ehr, bundle } = await setup([{ resourceType: 'Patient', id: 'p1' }, ...resources]);
    const first = await bundle('Observation?patient=p1&_count=10');
    ehr.upsert(observation('o0', 'p1', day(2))); // already listed: keeps its place, not repeated
    ehr.upsert(observation('new', 'p1', day(2))); // new: appended, listed at the end
    ehr.delete('Observation', 'o15'); // not yet listed: gone
    const ids = first.entry!.map((e) => e.resource.id);
    let next = first.link!.find((l) => l.relation === 'next')?.url;
    while (next) {
      const page = await bundle(next);
      ids.push(...page.entry!.map((e) => e.resource.id));
      next = page.link!.find((l) => l.relation === 'next')?.url;
    }
    expect(ids).toHaveLength(30);
    expect(new Set(ids).size).toBe(30);
    expect(ids).not.toContain('o15');
    expect(ids[ids.length - 1]).toBe('new');
  });

  it('when _lastUpdated has prefixes, then only resources in the window are returned', async () => {
    const resources = [1, 2, 3, 4, 5].map((d) => observation(`o${d}`, 'p1', day(d)));
    const { bundle } = await setup([{ resourceType: 'Patient', id: 'p1' }, ...resources]);
    const ids = async (q: string) =>
      (await bundle(`Observation?patient=p1&${q}`)).entry?.map((e) => e.resource.id) ?? [];
    expect(await ids(`_lastUpdated=ge${day(3)}`)).toEqual(['o3', 'o4', 'o5']);
    expect(await ids(`_lastUpdated=gt${day(3)}`)).toEqual(['o4', 'o5']);
    expect(await ids(`_lastUpdated=lt${day(3)}`)).toEqual(['o1', 'o2']);
    expect(await ids(`_lastUpdated=le${day(3)}`)).toEqual(['o1', 'o2', 'o3']);
    expect(await ids(`_lastUpdated=ge2024-03-02&_lastUpdated=lt2024-03-04`)).toEqual(['o2', 'o3']);
    expect(await ids('_lastUpdated=2024-03-05')).toEqual(['o5']);
    expect(await ids(`_lastUpdated=${encodeURIComponent('gt2024-03-03T12:00:00+02:00')}`)).toEqual([
      'o4',
      'o5',
    ]);
  });

  it('when a resource is upserted, then its version and lastUpdated move forward and a _lastUpdated search finds it', async () => {
    const { ehr, bundle } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      observation('o1', 'p1', day(1)),
    ]);
    const before = new Date().toISOString();
    const meta = ehr.upsert(observation('o1', 'p1', day(1), '29463-7'));
    expect(meta.versionId).toBe('2');
    expect(meta.lastUpdated >= before).toBe(true);
    const found = await bundle(`Observation?_lastUpdated=ge${encodeURIComponent(before)}`);
    expect(found.entry!.map((e) => e.resource.meta)).toEqual([meta]);
    const second = ehr.upsert(observation('o1', 'p1', day(1)));
    expect(second.versionId).toBe('3');
    expect(second.lastUpdated > meta.lastUpdated).toBe(true);
  });

  it('when searching Patient by identifier system|value or _id, then the matching patients are returned', async () => {
    const patient = (id: string, mrn: string) => ({
      resourceType: 'Patient',
      id,
      identifier: [{ system: 'urn:mrn', value: mrn }],
    });
    const { bundle } = await setup([patient('p1', 'A1'), patient('p2', 'A2'), patient('p3', 'A3')]);
    const ids = async (q: string) =>
      (await bundle(`Patient?${q}`)).entry?.map((e) => e.resource.id) ?? [];
    expect(await ids(`identifier=${encodeURIComponent('urn:mrn|A2')}`)).toEqual(['p2']);
    expect(await ids('identifier=A3')).toEqual(['p3']);
    expect(await ids(`identifier=${encodeURIComponent('urn:other|A2')}`)).toEqual([]);
    expect(await ids('_id=p1,p3')).toEqual(['p1', 'p3']);
  });

  it('when searching with code and status tokens, then only matching resources are returned', async () => {
    const { bundle } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      observation('h', 'p1', day(1), '8302-2'),
      observation('w', 'p1', day(1), '29463-7'),
    ]);
    const ids = async (q: string) =>
      (await bundle(`Observation?${q}`)).entry?.map((e) => e.resource.id) ?? [];
    expect(await ids(`code=${encodeURIComponent('http://loinc.org|29463-7')}`)).toEqual(['w']);
    expect(await ids('code=8302-2,29463-7&status=final')).toEqual(['h', 'w']);
    expect(await ids('status=amended')).toEqual([]);
  });

  it('when MedicationRequest is searched with _include, then referenced Medications come along as includes', async () => {
    const { bundle } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      { resourceType: 'Medication', id: 'm1', code: { text: 'prednisolone' } },
      {
        resourceType: 'MedicationRequest',
        id: 'r1',
        subject: { reference: 'Patient/p1' },
        medicationReference: { reference: 'Medication/m1' },
      },
    ]);
    const b = await bundle('MedicationRequest?patient=p1&_include=MedicationRequest:medication');
    expect(b.entry!.map((e) => [e.resource.resourceType, e.resource.id, e.search.mode])).toEqual([
      ['MedicationRequest', 'r1', 'match'],
      ['Medication', 'm1', 'include'],
    ]);
  });

  it('when _total=accurate or _summary=count is asked, then the total is given', async () => {
    const { bundle } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      ...[1, 2, 3].map((d) => observation(`o${d}`, 'p1', day(d))),
    ]);
    expect((await bundle('Observation?patient=p1&_count=1&_total=accurate')).total).toBe(3);
    const summary = await bundle('Observation?patient=p1&_summary=count');
    expect(summary.total).toBe(3);
    expect(summary.entry).toBeUndefined();
  });

  it('when an unknown parameter is sent, then it is ignored with a warning outcome, or refused under handling=strict', async () => {
    const { get } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      observation('o1', 'p1', day(1)),
    ]);
    const lenient = (await (await get('Observation?patient=p1&foo=bar')).json()) as Bundle;
    expect(lenient.entry!.map((e) => e.search.mode)).toEqual(['match', 'outcome']);
    const strict = await get('Observation?patient=p1&foo=bar', { prefer: 'handling=strict' });
    expect(strict.status).toBe(400);
    expect(await strict.json()).toMatchObject({ resourceType: 'OperationOutcome' });
    expect((await get('Observation?_lastUpdated=gtyesterday')).status).toBe(400);
  });

  it('when a resource is read, then it comes with an ETag; unknown is 404 and deleted is 410', async () => {
    const { ehr, get } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      observation('o1', 'p1', day(1)),
    ]);
    const res = await get('Observation/o1');
    expect(res.status).toBe(200);
    expect(res.headers.get('etag')).toBe('W/"1"');
    expect(((await res.json()) as { id: string }).id).toBe('o1');
    expect((await get('Observation/none')).status).toBe(404);
    ehr.delete('Observation', 'o1');
    expect((await get('Observation/o1')).status).toBe(410);
  });

  it('when the metadata is asked for, then the CapabilityStatement lists the types, search parameters and the token URL', async () => {
    const { ehr } = await setup([]);
    const res = await fetch(`${ehr.baseUrl}/metadata`);
    const cs = (await res.json()) as {
      fhirVersion: string;
      rest: { resource: { type: string; searchParam: { name: string }[] }[]; security: unknown }[];
    };
    expect(cs.fhirVersion).toBe('4.0.1');
    const types = cs.rest[0]!.resource.map((r) => r.type);
    expect(types).toEqual(
      expect.arrayContaining([
        'Patient',
        'Encounter',
        'Observation',
        'MedicationStatement',
        'MedicationRequest',
        'Medication',
        'Condition',
        'Group',
      ]),
    );
    const obs = cs.rest[0]!.resource.find((r) => r.type === 'Observation')!;
    expect(obs.searchParam.map((p) => p.name)).toEqual(
      expect.arrayContaining(['patient', '_lastUpdated', '_id']),
    );
    expect(JSON.stringify(cs.rest[0]!.security)).toContain(ehr.tokenUrl);
  });
});

describe('sandbox EHR search at size', () => {
  it('when 20,000 resources are paged type-wide with _count above the maximum, then pages are capped at 1,000 and every resource comes once', async () => {
    const many = Array.from({ length: 20_000 }, (_, i) =>
      observation(`o${i}`, `p${i % 500}`, day((i % 28) + 1)),
    );
    const { allPages } = await setup(many);
    const pages = await allPages('Observation?_count=5000');
    expect(pages).toHaveLength(20);
    expect(pages.every((p) => p.length === 1000)).toBe(true);
    const ids = pages.flat();
    expect(new Set(ids).size).toBe(20_000);
    expect(ids[0]).toBe('o0');
    expect(ids[19_999]).toBe('o19999');
  });

  it('when a search is POSTed to _search, then it answers as the GET search does', async () => {
    const { ehr, token } = await setup([
      { resourceType: 'Patient', id: 'p1' },
      observation('o1', 'p1', day(1)),
      observation('o2', 'p2', day(1)),
    ]);
    const res = await fetch(`${ehr.baseUrl}/Observation/_search`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${token}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'patient=p1',
    });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Bundle).entry!.map((e) => e.resource.id)).toEqual(['o1']);
  });
});

describe('sandbox EHR client registration', () => {
  it('when a JWKS with private key material is registered, then registration is refused', async () => {
    const { ehr } = await setup([]);
    expect(() =>
      ehr.registerClient({
        clientId: 'leaky',
        jwks: { keys: [{ kty: 'EC', crv: 'P-384', x: 'x', y: 'y', d: 'secret' }] },
      }),
    ).toThrow(/private or symmetric/);
    expect(() => ehr.registerClient({ clientId: 'nothing' })).toThrow(/jwks or jwksUrl/);
  });
});

describe('sandbox EHR bearer token checks', () => {
  it('when no token is sent, then 401 with WWW-Authenticate and an OperationOutcome', async () => {
    const { ehr } = await setup([{ resourceType: 'Patient', id: 'p1' }]);
    const res = await fetch(`${ehr.baseUrl}/Patient/p1`);
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await res.json()).toMatchObject({ resourceType: 'OperationOutcome' });
  });

  it('when a made-up token is sent, then 401 invalid_token', async () => {
    const { ehr } = await setup([{ resourceType: 'Patient', id: 'p1' }]);
    const res = await fetch(`${ehr.baseUrl}/Patient?_id=p1`, {
      headers: { authorization: 'Bearer not-a-token' },
    });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/error="invalid_token"/);
  });

  it("when the token's scopes do not cover the type, then 403 insufficient_scope", async () => {
    const { get } = await setup(
      [{ resourceType: 'Patient', id: 'p1' }, observation('o1', 'p1', day(1))],
      {
        centre: { scopes: ['system/Patient.read'] },
      },
    );
    expect((await get('Patient/p1')).status).toBe(200);
    const res = await get('Observation?patient=p1');
    expect(res.status).toBe(403);
    expect(res.headers.get('www-authenticate')).toMatch(/insufficient_scope/);
  });
});
