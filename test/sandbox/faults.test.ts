import { afterEach, describe, expect, it } from 'vitest';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import type { SandboxResource } from '../../src/sandbox/ehr/index.js';
import { startSandboxWithCentre, type SandboxFixture } from '../auth/helpers.js';

let fixture: SandboxFixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

const resources: SandboxResource[] = [
  { resourceType: 'Patient', id: 'p1' },
  {
    resourceType: 'Group',
    id: 'ibd',
    member: [{ entity: { reference: 'Patient/p1' } }],
  },
  ...Array.from({ length: 5 }, (_, i) => ({
    resourceType: 'Observation',
    id: `o${i}`,
    subject: { reference: 'Patient/p1' },
  })),
];

async function setup() {
  fixture = await startSandboxWithCentre({ resources });
  const token = (await createSmartAuth({ centre: fixture.centre }).getAccessToken()).token;
  const ehr = fixture.ehr;
  const get = (path: string, init: RequestInit = {}) =>
    fetch(path.startsWith('http') ? path : `${ehr.baseUrl}/${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) },
    });
  return { ehr, token, get };
}

describe('sandbox EHR fault switches', () => {
  it('when rateLimit is set for 2 requests, then those get 429 with Retry-After and the third succeeds', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ rateLimit: { count: 2, retryAfter: 7 } });
    const a = await get('Patient/p1');
    expect(a.status).toBe(429);
    expect(a.headers.get('retry-after')).toBe('7');
    expect((await get('Patient/p1')).status).toBe(429);
    expect((await get('Patient/p1')).status).toBe(200);
    expect(ehr.faults.current.rateLimit).toBeUndefined();
  });

  it('when the Retry-After is an HTTP date or an absurd epoch value, then it is sent as given', async () => {
    const { ehr, get } = await setup();
    const date = new Date(Date.now() + 5_000).toUTCString();
    ehr.faults.set({ rateLimit: { count: 1, retryAfter: date } });
    expect((await get('Patient/p1')).headers.get('retry-after')).toBe(date);
    ehr.faults.set({ unavailable: { count: 1, retryAfter: 1_700_000_000 } });
    const res = await get('Patient/p1');
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1700000000');
  });

  it('when a fault targets one resource type, then other types are served normally', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ unavailable: { count: 1, resourceType: 'Observation' } });
    expect((await get('Patient/p1')).status).toBe(200);
    expect((await get('Observation?patient=p1')).status).toBe(503);
    expect((await get('Observation?patient=p1')).status).toBe(200);
  });

  it('when faults hit data requests by default, then discovery and the token endpoint still work', async () => {
    const { ehr } = await setup();
    ehr.faults.set({ unavailable: { count: 10 } });
    const auth = createSmartAuth({ centre: fixture!.centre });
    await expect(auth.getAccessToken()).resolves.toMatchObject({ origin: ehr.origin });
    ehr.faults.set({ unavailable: { count: 1, kinds: ['token'] } });
    auth.invalidate((await auth.getAccessToken()).token);
    await expect(auth.getAccessToken()).rejects.toMatchObject({
      step: 'token',
      status: 503,
      retryable: true,
    });
  });

  it('when slow responses are switched on, then a client with a shorter timeout gives up and one without succeeds', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ slow: { delayMs: 1_000 } });
    await expect(get('Patient/p1', { signal: AbortSignal.timeout(100) })).rejects.toMatchObject({
      name: 'TimeoutError',
    });
    expect((await get('Patient/p1')).status).toBe(200);
    ehr.faults.reset();
    expect((await get('Patient/p1', { signal: AbortSignal.timeout(1_000) })).status).toBe(200);
  });

  it('when dropConnection is set, then the response breaks off mid-body and the next request is fine', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ dropConnection: { count: 1 } });
    const res = await get('Observation?patient=p1');
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    expect((await get('Observation?patient=p1')).status).toBe(200);
  });

  it('when a malformed page is set for page 2, then page 1 parses and page 2 is invalid JSON', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ malformedPage: { page: 2 } });
    const page1 = (await (await get('Observation?patient=p1&_count=2')).json()) as {
      link: { relation: string; url: string }[];
    };
    const next = page1.link.find((l) => l.relation === 'next')!.url;
    const page2 = await get(next);
    expect(page2.status).toBe(200);
    await expect(page2.json()).rejects.toThrow(SyntaxError);
    // One use only: the retry gets a good page.
    expect(((await (await get(next)).json()) as { resourceType: string }).resourceType).toBe(
      'Bundle',
    );
  });

  it('when a not-bundle page is set, then the page is valid JSON but not a Bundle', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ malformedPage: { page: 1, kind: 'not-bundle' } });
    expect(await (await get('Observation?patient=p1')).json()).toMatchObject({
      resourceType: 'Parameters',
    });
  });

  it('when foreignNextLink is set, then next links point at the foreign origin', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ foreignNextLink: { origin: 'http://evil.example' } });
    const page = (await (await get('Observation?patient=p1&_count=2')).json()) as {
      link: { relation: string; url: string }[];
    };
    const next = new URL(page.link.find((l) => l.relation === 'next')!.url);
    expect(next.origin).toBe('http://evil.example');
    expect(next.pathname).toBe('/fhir/Observation');
  });

  it('when status polls fail and then the export fails, then each is observable at the status URL', async () => {
    const { ehr, get } = await setup();
    const status = (
      await get('Group/ibd/$export', { headers: { prefer: 'respond-async' } })
    ).headers.get('content-location')!;
    ehr.faults.set({ statusPollError: { count: 1, status: 500 } });
    expect((await get(status)).status).toBe(500);
    expect((await get(status)).status).toBe(202);
    ehr.faults.set({ exportFailure: { message: 'disk full' } });
    const failed = await get(status);
    expect(failed.status).toBe(500);
    expect(JSON.stringify(await failed.json())).toContain('disk full');
  });

  it('when fileUrls says public files on another origin, then the manifest says requiresAccessToken false and files need no token', async () => {
    const { ehr, get } = await setup();
    ehr.faults.set({ fileUrls: { requiresAccessToken: false } });
    const status = (
      await get('Patient/$export?_type=Patient', { headers: { prefer: 'respond-async' } })
    ).headers.get('content-location')!;
    await get(status);
    const manifest = (await (await get(status)).json()) as {
      requiresAccessToken: boolean;
      output: { url: string }[];
    };
    expect(manifest.requiresAccessToken).toBe(false);
    const file = await fetch(manifest.output[0]!.url);
    expect(file.status).toBe(200);
    ehr.faults.set({ fileUrls: { origin: 'http://files.example', requiresAccessToken: false } });
    const again = (await (await get(status)).json()) as { output: { url: string }[] };
    expect(new URL(again.output[0]!.url).origin).toBe('http://files.example');
  });

  it('when requests are made, then counters by kind, type and status record them without tokens', async () => {
    const { ehr, token, get } = await setup();
    ehr.resetStats();
    await get('Patient/p1');
    await get('Observation?patient=p1');
    await get('Observation?patient=p1');
    await fetch(`${ehr.baseUrl}/Patient/p1`);
    expect(ehr.stats.byKind).toEqual({ read: 2, search: 2 });
    expect(ehr.stats.byType).toEqual({ Patient: 2, Observation: 2 });
    expect(ehr.stats.byStatus).toEqual({ 200: 3, 401: 1 });
    expect(ehr.requests.map((r) => [r.kind, r.authorized])).toEqual([
      ['read', true],
      ['search', true],
      ['search', true],
      ['read', false],
    ]);
    expect(JSON.stringify(ehr.requests)).not.toContain(token);
  });
});
