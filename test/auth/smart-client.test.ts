import { createServer } from 'node:net';
import { join } from 'node:path';
import { decodeJwt, decodeProtectedHeader, SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { SmartAuthError } from '../../src/auth/errors.js';
import {
  generateKeyPair,
  loadPrivateKey,
  privateKeyFileName,
  writePrivateKeyFile,
} from '../../src/auth/keys.js';
import { ASSERTION_LIFETIME_SECONDS, createSmartAuth } from '../../src/auth/smart-client.js';
import {
  createCapturingLogger,
  createClock,
  makeTempDir,
  startSandboxWithCentre,
  type SandboxFixture,
} from './helpers.js';

let fixture: SandboxFixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

async function start(
  options: Parameters<typeof startSandboxWithCentre>[0] = {},
): Promise<SandboxFixture> {
  fixture = await startSandboxWithCentre(options);
  return fixture;
}

/** A fetch that records token-request bodies, then calls the real fetch. */
function recordingFetch() {
  const bodies: URLSearchParams[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    if (init?.method === 'POST' && typeof init.body === 'string')
      bodies.push(new URLSearchParams(init.body));
    return fetch(input, init);
  };
  return { fetch: wrapped, bodies };
}

async function expectAuthError(promise: Promise<unknown>): Promise<SmartAuthError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SmartAuthError);
  return err as SmartAuthError;
}

function withCentre(centre: CentreConfig, patch: { fhir?: object; auth?: object }): CentreConfig {
  return {
    ...centre,
    fhir: { ...centre.fhir, ...patch.fhir },
    auth: { ...centre.auth, ...patch.auth },
  };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('createSmartAuth: token flow against the sandbox EHR', () => {
  it('when the client is registered, then it gets a token for the FHIR origin that the EHR accepts', async () => {
    const { ehr, centre } = await start({ resources: [{ resourceType: 'Patient', id: 'p1' }] });
    const recorder = recordingFetch();
    const auth = createSmartAuth({ centre, fetch: recorder.fetch });
    const token = await auth.getAccessToken();
    expect(token.origin).toBe(ehr.origin);
    expect(token.scopes).toEqual(centre.auth.scopes);
    expect(token.missingScopes).toEqual([]);
    expect(token.expiresAt).toBeGreaterThan(Date.now() + 200_000);
    expect(auth.tokenUrl).toBe(ehr.tokenUrl);

    const res = await fetch(`${ehr.baseUrl}/Patient/p1`, {
      headers: { authorization: `Bearer ${token.token}` },
    });
    expect(res.status).toBe(200);

    // The assertion follows SMART Backend Services.
    const form = recorder.bodies[0]!;
    expect(form.get('grant_type')).toBe('client_credentials');
    expect(form.get('client_assertion_type')).toBe(
      'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
    );
    expect(form.get('scope')).toBe(centre.auth.scopes.join(' '));
    const assertion = form.get('client_assertion')!;
    expect(decodeProtectedHeader(assertion)).toEqual({
      alg: 'ES384',
      kid: centre.auth.kid,
      typ: 'JWT',
    });
    const claims = decodeJwt(assertion);
    expect(claims.iss).toBe(centre.auth.clientId);
    expect(claims.sub).toBe(centre.auth.clientId);
    expect(claims.aud).toBe(ehr.tokenUrl);
    expect(claims.exp! - claims.iat!).toBe(ASSERTION_LIFETIME_SECONDS);
    expect(ASSERTION_LIFETIME_SECONDS).toBeLessThanOrEqual(300);
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('when an RS384 key with a jku is configured, then the header carries the jku and an EHR with no such JWKS URL registered says so', async () => {
    const { ehr, centre } = await start({ centre: { alg: 'RS384' } });
    const recorder = recordingFetch();
    const jku = 'https://bridge.example/.well-known/jwks.json';
    // The sandbox accepts a jku only if it is the client's registered JWKS URL.
    const auth = createSmartAuth({
      centre: withCentre(centre, { auth: { jku } }),
      fetch: recorder.fetch,
    });
    const err = await expectAuthError(auth.getAccessToken());
    expect(decodeProtectedHeader(recorder.bodies[0]!.get('client_assertion')!)).toMatchObject({
      alg: 'RS384',
      jku,
    });
    expect(err.code).toBe('invalid_client');
    expect(err.description).toMatch(/jku/);
    // Without the jku the same key works.
    await expect(createSmartAuth({ centre }).getAccessToken()).resolves.toMatchObject({
      origin: ehr.origin,
    });
  });

  it('when the token is asked for twice, then the cached token is reused (one token request)', async () => {
    const { ehr, centre } = await start();
    const auth = createSmartAuth({ centre });
    const a = await auth.getAccessToken();
    const b = await auth.getAccessToken();
    expect(b.token).toBe(a.token);
    expect(ehr.stats.byKind.token).toBe(1);
    expect(ehr.stats.byKind.discovery).toBe(1);
  });

  it('when many callers ask at once, then they share one token request', async () => {
    const { ehr, centre } = await start();
    const auth = createSmartAuth({ centre });
    const tokens = await Promise.all(Array.from({ length: 10 }, () => auth.getAccessToken()));
    expect(new Set(tokens.map((t) => t.token)).size).toBe(1);
    expect(ehr.stats.byKind.token).toBe(1);
    expect(ehr.stats.tokensIssued).toBe(1);
  });

  it('when the token nears expiry, then the next call fetches a new one (refresh margin)', async () => {
    const clock = createClock();
    const { ehr, centre } = await start({ ehr: { now: clock.now, tokenLifetimeSeconds: 100 } });
    const auth = createSmartAuth({ centre, now: clock.now });
    const first = await auth.getAccessToken();
    expect(first.expiresAt).toBe(clock.now() + 100_000);
    // 100 s token: refresh margin is min(60 s, a fifth of 100 s) = 20 s.
    clock.advance(79_000);
    expect((await auth.getAccessToken()).token).toBe(first.token);
    clock.advance(2_000);
    const second = await auth.getAccessToken();
    expect(second.token).not.toBe(first.token);
    expect(ehr.stats.byKind.token).toBe(2);
  });

  it('when the EHR issues 2-second tokens, then expired ones are refreshed and the new one works', async () => {
    const clock = createClock();
    const { ehr, centre } = await start({
      ehr: { now: clock.now, resources: [{ resourceType: 'Patient', id: 'p1' }] },
    });
    ehr.faults.set({ tokenLifetimeSeconds: 2 });
    const auth = createSmartAuth({ centre, now: clock.now });
    const first = await auth.getAccessToken();
    clock.advance(2_500);
    const expired = await fetch(`${ehr.baseUrl}/Patient/p1`, {
      headers: { authorization: `Bearer ${first.token}` },
    });
    expect(expired.status).toBe(401);
    expect(expired.headers.get('www-authenticate')).toMatch(/invalid_token/);
    const second = await auth.getAccessToken();
    expect(second.token).not.toBe(first.token);
    const ok = await fetch(`${ehr.baseUrl}/Patient/p1`, {
      headers: { authorization: `Bearer ${second.token}` },
    });
    expect(ok.status).toBe(200);
  });

  it('when a token is invalidated (401 on a data request), then the next call fetches a new one', async () => {
    const { ehr, centre } = await start();
    const auth = createSmartAuth({ centre });
    const first = await auth.getAccessToken();
    auth.invalidate('some-other-token');
    expect((await auth.getAccessToken()).token).toBe(first.token);
    auth.invalidate(first.token);
    const second = await auth.getAccessToken();
    expect(second.token).not.toBe(first.token);
    expect(ehr.stats.byKind.token).toBe(2);
  });

  it('when the token response has no expires_in, then an assumed lifetime is used and the token is cached', async () => {
    const clock = createClock();
    const { ehr, centre } = await start({ ehr: { now: clock.now } });
    ehr.faults.set({ omitExpiresIn: true });
    const auth = createSmartAuth({ centre, now: clock.now, defaultLifetimeSeconds: 120 });
    const first = await auth.getAccessToken();
    expect(first.expiresAt).toBe(clock.now() + 120_000);
    clock.advance(60_000);
    expect((await auth.getAccessToken()).token).toBe(first.token);
    clock.advance(40_000); // past 120 s minus the 24 s margin
    expect((await auth.getAccessToken()).token).not.toBe(first.token);
  });

  it('when the token request fails once, then the failure is not cached and the next call succeeds', async () => {
    const { ehr, centre } = await start();
    ehr.faults.set({ tokenError: { count: 1, status: 503, error: 'temporarily_unavailable' } });
    const auth = createSmartAuth({ centre });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err).toMatchObject({
      step: 'token',
      code: 'temporarily_unavailable',
      status: 503,
      retryable: true,
    });
    await expect(auth.getAccessToken()).resolves.toMatchObject({ origin: ehr.origin });
  });

  it('when a refresh inside the margin fails with a retryable error, then the still-valid token is used; after expiry the error surfaces', async () => {
    const clock = createClock();
    const { ehr, centre } = await start({ ehr: { now: clock.now, tokenLifetimeSeconds: 300 } });
    const auth = createSmartAuth({ centre, now: clock.now });
    const first = await auth.getAccessToken();
    clock.advance(250_000); // inside the 60 s margin, 50 s before expiry
    ehr.faults.set({ tokenError: { count: 2, status: 503, error: 'temporarily_unavailable' } });
    expect((await auth.getAccessToken()).token).toBe(first.token);
    clock.advance(60_000); // now past expiry
    await expect(auth.getAccessToken()).rejects.toMatchObject({ code: 'temporarily_unavailable' });
    expect((await auth.getAccessToken()).token).not.toBe(first.token);
  });

  it('when tokens are fetched with a debug logger, then neither the token nor the assertion is logged', async () => {
    const { centre } = await start();
    const log = createCapturingLogger();
    const recorder = recordingFetch();
    const auth = createSmartAuth({ centre, logger: log.logger, fetch: recorder.fetch });
    const token = await auth.getAccessToken();
    auth.invalidate(token.token);
    await auth.getAccessToken();
    expect(log.text()).toContain('access token obtained');
    expect(log.text()).not.toContain(token.token);
    expect(log.text()).not.toContain(recorder.bodies[0]!.get('client_assertion')!);
  });
});

describe('createSmartAuth: errors with hints', () => {
  it('when the EHR has a different key for the client (wrong kid), then invalid_client explains what to check', async () => {
    const { centre, keysDir } = await start();
    const other = await generateKeyPair('ES384');
    const file = join(keysDir, privateKeyFileName('other', other.kid));
    await writePrivateKeyFile(file, other.privateJwk);
    const auth = createSmartAuth({
      centre: withCentre(centre, { auth: { privateKeyFile: file, kid: other.kid } }),
    });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'token', code: 'invalid_client', status: 401 });
    expect(err.description).toContain(`no registered key with kid ${other.kid}`);
    expect(err.hint).toContain(`kid "${other.kid}"`);
    expect(err.hint).toContain(`client id "${centre.auth.clientId}"`);
    expect(err.hint).toMatch(/clock skew/);
    expect(err.message).toContain(err.description!);
  });

  it('when the client id is unknown to the EHR, then invalid_client carries the EHR description', async () => {
    const { centre } = await start();
    const auth = createSmartAuth({ centre: withCentre(centre, { auth: { clientId: 'nobody' } }) });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err.code).toBe('invalid_client');
    expect(err.description).toBe('unknown client id nobody');
    expect(err.hint).toContain('client id "nobody"');
  });

  it('when the scopes asked for are not allowed, then invalid_scope lists asked and supported scopes', async () => {
    const { centre } = await start({
      centre: {
        allowedScopes: ['system/Patient.rs', 'system/Observation.rs'],
        scopes: ['system/Patient.rs', 'system/Encounter.rs'],
      },
    });
    const auth = createSmartAuth({ centre });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'scopes', code: 'invalid_scope', status: 400 });
    expect(err.description).toContain('system/Encounter.rs');
    expect(err.hint).toContain('asked for: system/Patient.rs system/Encounter.rs');
    expect(err.hint).toContain('smart-configuration lists: system/*.read');
  });

  it('when the EHR grants fewer scopes than asked, then the token lists the missing ones', async () => {
    const { centre } = await start({
      centre: {
        allowedScopes: ['system/Patient.read', 'system/Observation.rs'],
        scopePolicy: 'downscope',
        scopes: ['system/Patient.rs', 'system/Observation.rs', 'system/Condition.rs'],
      },
    });
    const token = await createSmartAuth({ centre }).getAccessToken();
    expect(token.scopes).toEqual(['system/Patient.rs', 'system/Observation.rs']);
    expect(token.missingScopes).toEqual(['system/Condition.rs']);
  });

  it('when discovery is unreachable (closed port), then the error names the step, code and what to check', async () => {
    const { centre } = await start();
    const port = await closedPort();
    const auth = createSmartAuth({
      centre: withCentre(centre, { fhir: { baseUrl: `http://127.0.0.1:${port}/fhir` } }),
    });
    const err = await expectAuthError(auth.discover());
    expect(err).toMatchObject({ step: 'discovery', code: 'unreachable', retryable: true });
    expect(err.description).toMatch(/^ECONNREFUSED/);
    expect(err.hint).toContain(`127.0.0.1:${port}`);
    expect(err.hint).toMatch(/allow-list/);
    await expect(auth.getAccessToken()).rejects.toMatchObject({ step: 'discovery' });
  });

  it('when discovery answers 404 and no token URL is configured, then the hint says to set fhir.tokenUrl', async () => {
    const { ehr, centre } = await start();
    const auth = createSmartAuth({
      centre: withCentre(centre, { fhir: { baseUrl: `${ehr.origin}/wrong-base` } }),
    });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'discovery', code: 'not_found', status: 404 });
    expect(err.hint).toContain('fhir.tokenUrl');
  });

  it('when discovery fails but fhir.tokenUrl is configured, then the token URL is used', async () => {
    const { ehr, centre } = await start();
    const auth = createSmartAuth({
      centre: withCentre(centre, {
        fhir: { baseUrl: `${ehr.origin}/wrong-base`, tokenUrl: ehr.tokenUrl },
      }),
    });
    const token = await auth.getAccessToken();
    expect(token.origin).toBe(ehr.origin);
    expect(auth.tokenUrl).toBe(ehr.tokenUrl);
  });

  it("when our clock is 10 minutes behind the EHR's, then the assertion is signed with the EHR's time and the token is issued", async () => {
    const { centre } = await start();
    const recorder = recordingFetch();
    const log = createCapturingLogger();
    const auth = createSmartAuth({
      centre,
      fetch: recorder.fetch,
      logger: log.logger,
      now: () => Date.now() - 10 * 60_000,
    });
    await expect(auth.getAccessToken()).resolves.toMatchObject({ token: expect.any(String) });
    expect(auth.clockSkewMs).toBeGreaterThan(9 * 60_000);
    const claims = decodeJwt(recorder.bodies[0]!.get('client_assertion')!);
    const ehrNow = Date.now() / 1000;
    expect(Math.abs(claims.iat! - ehrNow)).toBeLessThan(5);
    expect(claims.exp! - ehrNow).toBeLessThanOrEqual(300);
    expect(log.text()).toMatch(
      /10 min behind the EHR's; signing client assertions with the EHR's time/,
    );
    expect(recorder.bodies).toHaveLength(1);
  });

  it("when our clock is 10 minutes ahead, then exp stays within 5 minutes of the EHR's clock and the skew is warned about once", async () => {
    const { centre } = await start();
    const recorder = recordingFetch();
    const log = createCapturingLogger();
    const auth = createSmartAuth({
      centre,
      fetch: recorder.fetch,
      logger: log.logger,
      now: () => Date.now() + 10 * 60_000,
    });
    const first = await auth.getAccessToken();
    auth.invalidate(first.token);
    await auth.getAccessToken();
    expect(recorder.bodies).toHaveLength(2);
    for (const body of recorder.bodies) {
      const claims = decodeJwt(body.get('client_assertion')!);
      expect(claims.exp! - Date.now() / 1000).toBeLessThanOrEqual(300);
      expect(claims.exp! - claims.iat!).toBe(ASSERTION_LIFETIME_SECONDS);
    }
    expect(log.text().match(/10 min ahead of the EHR's; signing/g)).toHaveLength(1);
    expect(log.text()).not.toContain(first.token);
  });

  it('when the EHR does not support our algorithm, then no token request is made and the hint says which to use', async () => {
    const { ehr, centre } = await start({ ehr: { supportedAlgs: ['RS384'] } });
    const err = await expectAuthError(createSmartAuth({ centre }).getAccessToken());
    expect(err).toMatchObject({ step: 'key', code: 'unsupported_alg' });
    expect(err.hint).toContain(`keys generate --centre ${centre.id} --alg RS384`);
    expect(ehr.stats.byKind.token).toBeUndefined();
  });

  it('when the private key file is missing, then the error is a key step error naming the setting', async () => {
    const { centre, keysDir } = await start();
    const auth = createSmartAuth({
      centre: withCentre(centre, { auth: { privateKeyFile: join(keysDir, 'gone.json') } }),
    });
    const err = await expectAuthError(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'key', code: 'key_unusable' });
    expect(err.hint).toContain('auth.privateKeyFile');
  });
});

describe('sandbox token endpoint: assertion checks', () => {
  async function signAssertion(
    fx: SandboxFixture,
    claims: { exp?: number; jti?: string; aud?: string },
  ): Promise<string> {
    const key = await loadPrivateKey(fx.privateKeyFile, 'ES384');
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT({})
      .setProtectedHeader({ alg: 'ES384', kid: fx.kid, typ: 'JWT' })
      .setIssuer(fx.centre.auth.clientId)
      .setSubject(fx.centre.auth.clientId)
      .setAudience(claims.aud ?? fx.ehr.tokenUrl)
      .setIssuedAt(now);
    if (claims.exp !== undefined) jwt.setExpirationTime(now + claims.exp);
    if (claims.jti !== undefined) jwt.setJti(claims.jti);
    return jwt.sign(key.key);
  }

  async function postToken(fx: SandboxFixture, assertion: string) {
    const res = await fetch(fx.ehr.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'client_credentials',
        scope: 'system/Patient.rs',
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
        client_assertion: assertion,
      }).toString(),
    });
    return { status: res.status, body: (await res.json()) as Record<string, string> };
  }

  it('when exp is more than 5 minutes ahead, then the sandbox rejects the assertion', async () => {
    const fx = await start();
    const res = await postToken(fx, await signAssertion(fx, { exp: 600, jti: 'a1' }));
    expect(res).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(res.body.error_description).toMatch(/more than 5 minutes/);
    expect((await postToken(fx, await signAssertion(fx, { exp: 300, jti: 'a2' }))).status).toBe(
      200,
    );
  });

  it('when a jti is replayed, then the second use is rejected', async () => {
    const fx = await start();
    const first = await postToken(fx, await signAssertion(fx, { exp: 120, jti: 'same' }));
    expect(first.status).toBe(200);
    const replay = await postToken(fx, await signAssertion(fx, { exp: 120, jti: 'same' }));
    expect(replay).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(replay.body.error_description).toMatch(/jti already used/);
  });

  it('when exp or jti is missing or aud is not the token URL, then the assertion is rejected', async () => {
    const fx = await start();
    expect(
      (await postToken(fx, await signAssertion(fx, { jti: 'x1' }))).body.error_description,
    ).toMatch(/no exp/);
    expect(
      (await postToken(fx, await signAssertion(fx, { exp: 60 }))).body.error_description,
    ).toMatch(/no jti/);
    const wrongAud = await postToken(
      fx,
      await signAssertion(fx, { exp: 60, jti: 'x2', aud: `${fx.ehr.baseUrl}/token` }),
    );
    expect(wrongAud).toMatchObject({ status: 401, body: { error: 'invalid_client' } });
    expect(wrongAud.body.error_description).toMatch(/aud/);
  });

  it('when the client registered a JWKS URL, then the sandbox fetches keys from it', async () => {
    const temp = await makeTempDir();
    const pair = await generateKeyPair('ES384');
    const file = join(temp.dir, privateKeyFileName('centre-u', pair.kid));
    await writePrivateKeyFile(file, pair.privateJwk);
    const { createServer: createHttpServer } = await import('node:http');
    let served = 0;
    const jwksServer = createHttpServer((_req, res) => {
      served++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ keys: [pair.publicJwk] }));
    });
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwksServer.address() as { port: number }).port}/.well-known/jwks.json`;
    try {
      const { ehr } = await start();
      ehr.registerClient({ clientId: 'url-client', jwksUrl });
      const centre = parseCentre(
        {
          id: 'centre-u',
          name: 'U',
          fhir: { baseUrl: ehr.baseUrl },
          auth: { clientId: 'url-client', privateKeyFile: file, kid: pair.kid, jku: jwksUrl },
          cohort: { group: 'g' },
        },
        join(temp.dir, 'centre-u.yaml'),
      );
      await expect(createSmartAuth({ centre }).getAccessToken()).resolves.toMatchObject({
        origin: ehr.origin,
      });
      expect(served).toBeGreaterThanOrEqual(1);
    } finally {
      await new Promise((resolve) => jwksServer.close(resolve));
      await temp.cleanup();
    }
  });
});
