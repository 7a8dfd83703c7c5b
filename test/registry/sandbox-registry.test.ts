import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { makeRetraction, makeVisit } from '../sync/helpers.js';

async function post(
  registry: SandboxRegistry,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${registry.url}/submissions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe('sandbox registry', () => {
  let registry: SandboxRegistry;
  beforeAll(async () => {
    registry = await startSandboxRegistry();
  });
  afterAll(async () => {
    await registry.close();
  });
  beforeEach(() => {
    registry.reset();
    registry.faults.clear();
  });

  it('when a valid visit is posted, then it is stored as version 1 (201 created)', async () => {
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    const res = await post(registry, visit, { 'idempotency-key': visit.submissionId });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ status: 'created', version: 1 });
    expect(registry.visits()).toHaveLength(1);
    expect(registry.visits()[0]!.current).toEqual(visit);
  });

  it('when the same submission id is posted twice, then the second is a duplicate and stored once', async () => {
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    await post(registry, visit);
    const again = await post(registry, visit);
    expect(again.status).toBe(200);
    expect(again.body.status).toBe('duplicate');
    expect(registry.submissions()).toHaveLength(1);
    expect(registry.counts()).toMatchObject({ accepted: 1, duplicates: 1 });
  });

  it('when a visit changes, then the new content becomes version 2 of the same visit', async () => {
    await post(registry, makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'mild' }));
    const v2 = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    const res = await post(registry, v2);
    expect(res.body).toMatchObject({ status: 'updated', version: 2 });
    const [stored] = registry.visits();
    expect(stored!.current!.pga).toBe('severe');
    expect(stored!.history).toHaveLength(2);
  });

  it('when an earlier version is posted after a newer one, then it is applied again as the current version', async () => {
    const v1 = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'mild' });
    const v2 = makeVisit({ patientId: 'p1', encounterId: 'e1', pga: 'severe' });
    await post(registry, v1);
    await post(registry, v2);
    const res = await post(registry, v1);
    expect(res.body).toMatchObject({ status: 'updated', version: 3 });
    expect(registry.visits()[0]!.current!.pga).toBe('mild');
    expect((await post(registry, v1)).body.status).toBe('duplicate');
  });

  it('when a retraction arrives, then the visit is marked retracted with the reason', async () => {
    await post(registry, makeVisit({ patientId: 'p1', encounterId: 'e1' }));
    const res = await post(registry, makeRetraction({ patientId: 'p1', encounterId: 'e1' }));
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('retracted');
    const [stored] = registry.visits();
    expect(stored).toMatchObject({
      retracted: true,
      retractionReason: 'entered-in-error',
      version: 2,
    });
  });

  it('when a submission breaks the schema, then it is rejected with 400 and the failing path', async () => {
    const visit = { ...makeVisit({ patientId: 'p1', encounterId: 'e1' }), name: 'Jane' };
    const res = await post(registry, visit);
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body.errors)).toContain('name');
    expect(registry.submissions()).toHaveLength(0);
  });

  it('when the Idempotency-Key differs from the submission id, then it is rejected', async () => {
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    const res = await post(registry, visit, { 'idempotency-key': 'something-else' });
    expect(res.status).toBe(400);
  });

  it('when the body is not JSON, then it answers 400 with a reason', async () => {
    const res = await post(registry, '{not json');
    expect(res.status).toBe(400);
    expect(res.body.detail).toMatch(/not valid JSON/);
  });

  it('when told to be unavailable for 2 requests, then it answers 503 twice and then accepts', async () => {
    registry.faults.unavailableFor(2);
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    expect((await post(registry, visit)).status).toBe(503);
    expect((await post(registry, visit)).status).toBe(503);
    expect((await post(registry, visit)).status).toBe(201);
    expect(registry.counts().faulted).toBe(2);
  });

  it('when told to be unavailable for a time window, then it answers 503 until the window ends', async () => {
    registry.faults.unavailableForMs(300);
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    expect((await post(registry, visit)).status).toBe(503);
    await new Promise((r) => setTimeout(r, 350));
    expect((await post(registry, visit)).status).toBe(201);
  });

  it('when told to reject one submission, then that one gets 400 with the reason and others pass', async () => {
    const bad = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    const good = makeVisit({ patientId: 'p1', encounterId: 'e2' });
    registry.faults.rejectSubmission(bad.submissionId, 'visit date before birth');
    const res = await post(registry, bad);
    expect(res.status).toBe(400);
    expect(res.body.detail).toBe('visit date before birth');
    expect((await post(registry, good)).status).toBe(201);
  });

  it('when GET /submissions is called, then it lists what was accepted', async () => {
    await post(registry, makeVisit({ patientId: 'p1', encounterId: 'e1' }));
    const res = await fetch(`${registry.url}/submissions`);
    const body = (await res.json()) as { count: number };
    expect(body.count).toBe(1);
  });
});

describe('sandbox registry with auth', () => {
  let registry: SandboxRegistry;
  beforeAll(async () => {
    registry = await startSandboxRegistry({
      token: 'static-token',
      clientCredentials: { clientId: 'bridge', clientSecret: 's3cret' },
    });
  });
  afterAll(async () => {
    await registry.close();
  });

  it('when no bearer token is sent, then it answers 401', async () => {
    const res = await post(registry, makeVisit({ patientId: 'p1', encounterId: 'e1' }));
    expect(res.status).toBe(401);
  });

  it('when the configured token is sent, then it accepts', async () => {
    const res = await post(registry, makeVisit({ patientId: 'p1', encounterId: 'e1' }), {
      authorization: 'Bearer static-token',
    });
    expect(res.status).toBe(201);
  });

  it('when a client-credentials token is obtained, then it is accepted; wrong secrets get invalid_client', async () => {
    const bad = await fetch(registry.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=bridge&client_secret=wrong',
    });
    expect(bad.status).toBe(401);
    const ok = await fetch(registry.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'grant_type=client_credentials&client_id=bridge&client_secret=s3cret',
    });
    const { access_token } = (await ok.json()) as { access_token: string };
    const res = await post(registry, makeVisit({ patientId: 'p2', encounterId: 'e2' }), {
      authorization: `Bearer ${access_token}`,
    });
    expect(res.status).toBe(201);
  });
});
