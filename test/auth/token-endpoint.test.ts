// What the SMART client makes of the token endpoint a discovery document names, and of the
// token endpoint's answers, against a loopback EHR whose replies each test scripts.
import { generateKeyPairSync } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { SmartAuthError, wwwAuthenticateError } from '../../src/auth/errors.js';
import { generateKeyPair, privateKeyFileName, writePrivateKeyFile } from '../../src/auth/keys.js';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import { makeTempDir } from './helpers.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

interface ScriptedEhr {
  url: string;
  requests: string[];
  close: () => Promise<void>;
}

let temp: Awaited<ReturnType<typeof makeTempDir>>;
let keyFile: string;
let kid: string;
let ehr: ScriptedEhr | undefined;

beforeEach(async () => {
  temp = await makeTempDir();
  const pair = await generateKeyPair('ES384');
  kid = pair.kid;
  keyFile = join(temp.dir, privateKeyFileName('centre-t', pair.kid));
  await writePrivateKeyFile(keyFile, pair.privateJwk);
});
afterEach(async () => {
  await ehr?.close();
  ehr = undefined;
  await temp.cleanup();
});

/** A loopback EHR: `handler` answers every request. */
async function startEhr(handler: Handler): Promise<ScriptedEhr> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      requests.push(`${req.method} ${req.url}`);
      handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  ehr = {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  return ehr;
}

function json(res: ServerResponse, status: number, body: unknown, headers = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function centre(baseUrl: string): CentreConfig {
  return parseCentre(
    {
      id: 'centre-t',
      name: 'T',
      fhir: { baseUrl },
      auth: { clientId: 'bridge', privateKeyFile: keyFile, kid },
      cohort: { group: 'g' },
    },
    join(temp.dir, 'centre-t.yaml'),
  );
}

/** A fetch that only reaches loopback addresses; anything else is recorded and refused. */
function loopbackOnlyFetch() {
  const refused: string[] = [];
  const wrapped: typeof fetch = async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (url.hostname !== '127.0.0.1') {
      refused.push(`${init?.method ?? 'GET'} ${url.href}`);
      throw new TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
    }
    return fetch(input, init);
  };
  return { fetch: wrapped, refused };
}

async function failure(promise: Promise<unknown>): Promise<SmartAuthError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SmartAuthError);
  return err as SmartAuthError;
}

describe('discovered token endpoint on plain http', () => {
  it('when smart-configuration names an http token endpoint on another host, then discovery refuses it and no assertion is sent', async () => {
    const server = await startEhr((req, res) =>
      req.url === '/fhir/.well-known/smart-configuration'
        ? json(res, 200, { token_endpoint: 'http://auth.ehr.example/oauth2/token' })
        : json(res, 404, {}),
    );
    const net = loopbackOnlyFetch();
    const auth = createSmartAuth({ centre: centre(`${server.url}/fhir`), fetch: net.fetch });
    const err = await failure(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'discovery', code: 'insecure_token_endpoint' });
    expect(err.retryable).toBe(false);
    expect(err.hint).toContain(
      'The EHR names a plain-http token endpoint (http://auth.ehr.example/oauth2/token); ask centre IT for its https URL, or set fhir.tokenUrl',
    );
    expect(net.refused).toEqual([]);
  });

  it('when the CapabilityStatement names an http token endpoint on another host, then discovery refuses it too', async () => {
    const server = await startEhr((req, res) =>
      req.url === '/fhir/metadata'
        ? json(res, 200, {
            resourceType: 'CapabilityStatement',
            rest: [
              {
                mode: 'server',
                security: {
                  extension: [
                    {
                      url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                      extension: [{ url: 'token', valueUri: 'http://auth.ehr.example/token' }],
                    },
                  ],
                },
              },
            ],
          })
        : json(res, 404, {}),
    );
    const net = loopbackOnlyFetch();
    const auth = createSmartAuth({ centre: centre(`${server.url}/fhir`), fetch: net.fetch });
    const err = await failure(auth.getAccessToken());
    expect(err).toMatchObject({ step: 'discovery', code: 'insecure_token_endpoint' });
    expect(err.hint).toContain('plain-http token endpoint (http://auth.ehr.example/token)');
    expect(err.hint).toContain('CapabilityStatement');
    expect(net.refused).toEqual([]);
  });

  it('when the token endpoint is plain http on loopback, then it is used (local sandboxes)', async () => {
    const server = await startEhr((req, res) => {
      if (req.url === '/fhir/.well-known/smart-configuration')
        return json(res, 200, { token_endpoint: `${server.url}/token` });
      if (req.url === '/token')
        return json(res, 200, { access_token: 'at-1', token_type: 'bearer', expires_in: 300 });
      json(res, 404, {});
    });
    const auth = createSmartAuth({ centre: centre(`${server.url}/fhir`) });
    expect((await auth.getAccessToken()).token).toBe('at-1');
  });
});

/** A loopback EHR whose discovery names its /token, answered by `token`. */
async function startTokenEhr(token: Handler): Promise<ScriptedEhr> {
  const server = await startEhr((req, res, body) => {
    if (req.url === '/fhir/.well-known/smart-configuration')
      return json(res, 200, { token_endpoint: `${server.url}/token` });
    if (req.url === '/token') return token(req, res, body);
    json(res, 404, {});
  });
  return server;
}

describe('token endpoint refusals', () => {
  it('when a 200 carries an OAuth error and no access_token, then the error and description are reported like a 400', async () => {
    const server = await startTokenEhr((_req, res) =>
      json(res, 200, {
        error: 'invalid_client',
        error_description: 'Client bridge is not approved in this environment',
      }),
    );
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`) }).getAccessToken(),
    );
    expect(err).toMatchObject({
      step: 'token',
      code: 'invalid_client',
      status: 200,
      description: 'Client bridge is not approved in this environment',
    });
    expect(err.hint).toContain('rejected our client credentials');
  });

  it('when a 401 has an empty body and the reason in WWW-Authenticate, then that error and description are reported', async () => {
    const server = await startTokenEhr((_req, res) => {
      res.writeHead(401, {
        'www-authenticate':
          'Bearer realm="ehr", error="invalid_client", error_description="unknown kid"',
      });
      res.end();
    });
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`) }).getAccessToken(),
    );
    expect(err).toMatchObject({ code: 'invalid_client', status: 401, description: 'unknown kid' });
  });

  it('when a 401 says nothing at all, then it is treated as invalid_client with the credentials checklist', async () => {
    const server = await startTokenEhr((_req, res) => {
      res.writeHead(401);
      res.end();
    });
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`) }).getAccessToken(),
    );
    expect(err).toMatchObject({ step: 'token', code: 'invalid_client', status: 401 });
    expect(err.hint).toContain(`kid "${kid}"`);
  });

  it('when the EHR echoes the assertion in its error_description, then the message does not contain it', async () => {
    const server = await startTokenEhr((_req, res, body) => {
      const assertion = new URLSearchParams(body).get('client_assertion') ?? '';
      json(res, 400, { error: 'invalid_grant', error_description: `bad assertion ${assertion}` });
    });
    const sent: string[] = [];
    const recording: typeof fetch = async (input, init) => {
      if (typeof init?.body === 'string')
        sent.push(new URLSearchParams(init.body).get('client_assertion') ?? '');
      return fetch(input, init);
    };
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`), fetch: recording }).getAccessToken(),
    );
    expect(sent[0]).toMatch(/^eyJ/);
    expect(err.code).toBe('invalid_grant');
    expect(err.message).toContain('bad assertion [redacted]');
    for (const assertion of sent) expect(err.message).not.toContain(assertion);
  });
});

describe('wwwAuthenticateError', () => {
  it('reads quoted and bare error parameters, with escapes, and nothing from other headers', () => {
    expect(
      wwwAuthenticateError(
        'Bearer error=invalid_client, error_description="the \\"kid\\" is unknown"',
      ),
    ).toEqual({ error: 'invalid_client', description: 'the "kid" is unknown' });
    expect(wwwAuthenticateError('Basic realm="x"')).toEqual({});
    expect(wwwAuthenticateError(null)).toEqual({});
  });
});

describe('token refusal hints', () => {
  it('when the EHR says unauthorized_client, then the hint asks to enable the backend account and grant, not to re-register the key', async () => {
    const server = await startTokenEhr((_req, res) =>
      json(res, 400, {
        error: 'unauthorized_client',
        error_description: 'client not authorized for client_credentials',
      }),
    );
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`) }).getAccessToken(),
    );
    expect(err).toMatchObject({ step: 'token', code: 'unauthorized_client', status: 400 });
    expect(err.hint).toContain('accepted the key');
    expect(err.hint).toContain('tenant/domain');
    expect(err.hint).toContain('client_credentials grant');
    expect(err.hint).not.toContain('registered for client id');
  });

  it('when the EHR says invalid_client, then the hint names `lhn-bridge keys jwks`, the command that prints the JWKS', async () => {
    const server = await startTokenEhr((_req, res) => json(res, 400, { error: 'invalid_client' }));
    const err = await failure(
      createSmartAuth({ centre: centre(`${server.url}/fhir`) }).getAccessToken(),
    );
    expect(err.hint).toContain('`lhn-bridge keys jwks`');
    expect(err.hint).not.toContain('keys list');
  });
});

describe('unusable signing key', () => {
  it('when the RS384 key file holds a 1024-bit RSA key, then no token request is sent and the hint gives the keys generate command for RS384', async () => {
    const tokenRequests: string[] = [];
    const server = await startTokenEhr((_req, res) => {
      tokenRequests.push('token');
      json(res, 400, { error: 'invalid_client' });
    });
    const small = join(temp.dir, 'small.pem');
    const pem = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    });
    await writeFile(small, pem, { mode: 0o600 });
    const base = centre(`${server.url}/fhir`);
    const rsaCentre = {
      ...base,
      auth: { ...base.auth, alg: 'RS384' as const, privateKeyFile: small },
    };
    const err = await failure(createSmartAuth({ centre: rsaCentre }).getAccessToken());
    expect(err).toMatchObject({ step: 'key', code: 'key_unusable' });
    expect(err.description).toMatch(/1024 bits; RS384 needs at least 2048/);
    expect(err.hint).toContain(
      'generate a new key (`lhn-bridge keys generate --centre centre-t --alg RS384`)',
    );
    expect(tokenRequests).toEqual([]);
  });
});
