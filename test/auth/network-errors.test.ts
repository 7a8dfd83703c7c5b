// Protocol faults a loopback server cannot easily produce (TLS certificate failures, DNS,
// non-JSON discovery documents), simulated with nock; no real network is touched.
import { decodeJwt } from 'jose';
import nock from 'nock';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseCentre } from '../../src/config/centre.js';
import { networkFailure, SmartAuthError } from '../../src/auth/errors.js';
import { generateKeyPair, privateKeyFileName, writePrivateKeyFile } from '../../src/auth/keys.js';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import { join } from 'node:path';
import { makeTempDir } from './helpers.js';

const EHR = 'https://ehr.example';
let temp: Awaited<ReturnType<typeof makeTempDir>>;
let keyFile: string;
let kid: string;

beforeAll(() => {
  nock.disableNetConnect();
});
afterAll(() => {
  nock.enableNetConnect();
});
beforeEach(async () => {
  temp = await makeTempDir();
  const pair = await generateKeyPair('ES384');
  kid = pair.kid;
  keyFile = join(temp.dir, privateKeyFileName('centre-t', pair.kid));
  await writePrivateKeyFile(keyFile, pair.privateJwk);
});
afterEach(async () => {
  nock.cleanAll();
  await temp.cleanup();
});

function centre(fhir: Record<string, string> = {}) {
  return parseCentre(
    {
      id: 'centre-t',
      name: 'T',
      fhir: { baseUrl: `${EHR}/fhir`, ...fhir },
      auth: { clientId: 'bridge', privateKeyFile: keyFile, kid },
      cohort: { group: 'g' },
    },
    join(temp.dir, 'centre-t.yaml'),
  );
}

async function failure(promise: Promise<unknown>): Promise<SmartAuthError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SmartAuthError);
  return err as SmartAuthError;
}

describe('SMART client network and TLS failures', () => {
  it("when the EHR's certificate has expired, then discovery fails with tls_error naming CERT_HAS_EXPIRED", async () => {
    const scope = nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .replyWithError({ code: 'CERT_HAS_EXPIRED', message: 'certificate has expired' });
    const err = await failure(createSmartAuth({ centre: centre() }).discover());
    expect(err).toMatchObject({ step: 'discovery', code: 'tls_error', retryable: false });
    expect(err.description).toContain('CERT_HAS_EXPIRED');
    expect(err.hint).toContain('ehr.example');
    expect(err.hint).toContain('NODE_EXTRA_CA_CERTS');
    expect(scope.isDone()).toBe(true);
  });

  it('when the certificate names another host, then the hint says so', async () => {
    nock(EHR).get('/fhir/.well-known/smart-configuration').replyWithError({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
      message: "Hostname/IP does not match certificate's altnames",
    });
    const err = await failure(createSmartAuth({ centre: centre() }).discover());
    expect(err.code).toBe('tls_error');
    expect(err.description).toMatch(
      /ERR_TLS_CERT_ALTNAME_INVALID: the certificate does not name this host/,
    );
  });

  it('when the token endpoint has a self-signed certificate, then the token step fails with tls_error', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: `${EHR}/oauth/token` })
      .post('/oauth/token')
      .replyWithError({
        code: 'SELF_SIGNED_CERT_IN_CHAIN',
        message: 'self-signed certificate in certificate chain',
      });
    const err = await failure(createSmartAuth({ centre: centre() }).getAccessToken());
    expect(err).toMatchObject({ step: 'token', code: 'tls_error' });
    expect(err.description).toContain('SELF_SIGNED_CERT_IN_CHAIN');
  });

  it('when the host does not resolve, then discovery says DNS', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .replyWithError({ code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND ehr.example' });
    const err = await failure(createSmartAuth({ centre: centre() }).discover());
    expect(err).toMatchObject({ step: 'discovery', code: 'unreachable', retryable: true });
    expect(err.description).toMatch(/ENOTFOUND: .*DNS/);
  });

  it('when discovery returns an HTML page, then the hint says the base URL is not the FHIR base', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, '<html>login</html>', { 'content-type': 'text/html' });
    const err = await failure(createSmartAuth({ centre: centre() }).discover());
    expect(err).toMatchObject({ step: 'discovery', code: 'invalid_configuration' });
    expect(err.hint).toMatch(/not the FHIR base/);
  });

  it('when the EHR advertises no private_key_jwt, then the token step is not attempted and the hint says why', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, {
        token_endpoint: `${EHR}/oauth/token`,
        token_endpoint_auth_methods_supported: ['client_secret_basic'],
      });
    const err = await failure(createSmartAuth({ centre: centre() }).getAccessToken());
    expect(err).toMatchObject({ step: 'discovery', code: 'unsupported_auth_method' });
    expect(err.hint).toMatch(/private_key_jwt/);
  });

  it('when the token endpoint answers a non-JSON 502, then the error is retryable and says so', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: `${EHR}/oauth/token` })
      .post('/oauth/token')
      .reply(502, 'Bad Gateway', { 'retry-after': '30' });
    const err = await failure(createSmartAuth({ centre: centre() }).getAccessToken());
    expect(err).toMatchObject({
      step: 'token',
      code: 'server_error',
      status: 502,
      retryable: true,
      retryAfter: '30',
    });
    expect(err.hint).toContain('Retry-After 30');
  });

  it('when the first Date comes with an invalid_client refusal, then the assertion is signed again once with the EHR time', async () => {
    const serverNow = Date.now() + 5 * 60_000;
    const serverDate = () => new Date(serverNow).toUTCString();
    const exps: number[] = [];
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: `${EHR}/oauth/token` }) // no Date header
      .post('/oauth/token')
      .times(2)
      .reply((_uri, body) => {
        const exp = decodeJwt(new URLSearchParams(body as string).get('client_assertion')!).exp!;
        exps.push(exp);
        return exp < serverNow / 1000 - 30
          ? [
              401,
              { error: 'invalid_client', error_description: 'assertion expired' },
              { date: serverDate() },
            ]
          : [
              200,
              { access_token: 'tok', token_type: 'Bearer', expires_in: 300 },
              { date: serverDate() },
            ];
      });
    const token = await createSmartAuth({ centre: centre() }).getAccessToken();
    expect(token.token).toBe('tok');
    expect(exps).toHaveLength(2);
    expect(exps[1]! - serverNow / 1000).toBeLessThanOrEqual(300);
  });

  it("when the skew is only a few seconds, then the assertion uses this machine's clock", async () => {
    const serverDate = new Date(Date.now() + 3_000).toUTCString();
    let iat = 0;
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: `${EHR}/oauth/token` }, { date: serverDate })
      .post('/oauth/token')
      .reply((_uri, body) => {
        iat = decodeJwt(new URLSearchParams(body as string).get('client_assertion')!).iat!;
        return [200, { access_token: 'tok', token_type: 'Bearer', expires_in: 300 }];
      });
    const before = Math.floor(Date.now() / 1000);
    await createSmartAuth({ centre: centre() }).getAccessToken();
    expect(iat - before).toBeLessThanOrEqual(1);
  });

  it('when token_endpoint is relative, then it resolves against the smart-configuration URL', async () => {
    const scope = nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: '/oauth/token' })
      .post('/oauth/token')
      .reply(200, { access_token: 'tok', token_type: 'Bearer', expires_in: 300 });
    const auth = createSmartAuth({ centre: centre() });
    await expect(auth.getAccessToken()).resolves.toMatchObject({ token: 'tok' });
    expect(auth.tokenUrl).toBe(`${EHR}/oauth/token`);
    expect(auth.tokenUrlSource).toBe('smart-configuration');
    expect(scope.isDone()).toBe(true);
  });

  it('when token_endpoint is not an http(s) URL, then discovery fails as invalid_configuration, not retryable', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: 'urn:example:token' });
    const err = await failure(createSmartAuth({ centre: centre() }).getAccessToken());
    expect(err).toMatchObject({
      step: 'discovery',
      code: 'invalid_configuration',
      retryable: false,
    });
    expect(err.hint).toMatch(/smart-configuration names a token_endpoint that is not a usable URL/);
  });

  it('when smart-configuration is 404, then the CapabilityStatement oauth-uris token is used and token errors say so', async () => {
    const metadata = {
      resourceType: 'CapabilityStatement',
      fhirVersion: '4.0.1',
      rest: [
        {
          mode: 'server',
          security: {
            extension: [
              {
                url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                extension: [
                  { url: 'authorize', valueUri: `${EHR}/oauth/authorize` },
                  { url: 'token', valueUri: '/oauth/token' },
                ],
              },
            ],
          },
        },
      ],
    };
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(404)
      .get('/fhir/metadata')
      .reply(200, metadata)
      .post('/oauth/token')
      .reply(404);
    const auth = createSmartAuth({ centre: centre() });
    const config = await auth.discover();
    expect(config.token_endpoint).toBe(`${EHR}/oauth/token`);
    expect(auth.tokenUrlSource).toBe('capability-statement');
    const err = await failure(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'token', status: 404 });
    expect(err.hint).toContain(
      `${EHR}/oauth/token (from the CapabilityStatement's oauth-uris extension`,
    );
  });

  it('when smart-configuration is 404 and the CapabilityStatement names no token endpoint, then the hint says both were tried', async () => {
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(404)
      .get('/fhir/metadata')
      .reply(200, { resourceType: 'CapabilityStatement', rest: [{ mode: 'server' }] });
    const err = await failure(createSmartAuth({ centre: centre() }).discover());
    expect(err).toMatchObject({ step: 'discovery', code: 'not_found', retryable: false });
    expect(err.hint).toMatch(
      /CapabilityStatement \(https:\/\/ehr\.example\/fhir\/metadata\) names no token endpoint/,
    );
    expect(err.hint).toContain('fhir.tokenUrl');
  });

  it('when a URL is not a valid absolute URL (ERR_INVALID_URL), then the error is invalid_url and not retryable', () => {
    const err = networkFailure(
      'token',
      '/auth/token',
      'the token endpoint',
      Object.assign(new TypeError('Invalid URL'), { code: 'ERR_INVALID_URL' }),
    );
    expect(err).toMatchObject({ step: 'token', code: 'invalid_url', retryable: false });
    expect(err.hint).not.toMatch(/DNS|allow-list/);
  });

  it('when the server Date differs by 3 minutes and the EHR says invalid_grant about iat, then the hint names the skew', async () => {
    const serverDate = new Date(Date.now() + 3 * 60_000).toUTCString();
    nock(EHR)
      .get('/fhir/.well-known/smart-configuration')
      .reply(200, { token_endpoint: `${EHR}/oauth/token` }, { date: serverDate })
      .post('/oauth/token')
      .reply(
        400,
        { error: 'invalid_grant', error_description: 'iat is too far in the past' },
        { date: serverDate },
      );
    const err = await failure(createSmartAuth({ centre: centre() }).getAccessToken());
    expect(err).toMatchObject({ step: 'token', code: 'invalid_grant' });
    expect(err.hint).toMatch(/clock skew \(this machine's clock is 3 min behind the EHR's/);
  });
});
