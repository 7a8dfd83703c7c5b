// The onboarding check's auth steps against scripted loopback EHRs: request timeouts, the
// signing key, and which scopes the pull really needs.
import { generateKeyPairSync } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateKeyPair, privateKeyFileName, writePrivateKeyFile } from '../../src/auth/keys.js';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { runCheck } from '../../src/onboarding/check.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** A loopback EHR: `handler` answers (or does not answer) every request. */
async function startEhr(handler: Handler): Promise<string> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => handler(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

/** A loopback EHR with discovery and a token endpoint; records token requests. */
async function startTokenEhr(): Promise<{ base: string; tokenRequests: number[] }> {
  const tokenRequests: number[] = [];
  let base = '';
  base = await startEhr((req, res) => {
    if (req.url === '/fhir/.well-known/smart-configuration')
      return json(res, 200, { token_endpoint: `${base}/token` });
    if (req.url === '/token') {
      tokenRequests.push(Date.now());
      return json(res, 400, { error: 'invalid_client' });
    }
    json(res, 404, {});
  });
  return { base, tokenRequests };
}

/** A keys folder with one ES384 key for centre c1. */
async function makeKey(): Promise<{ dir: string; file: string; kid: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'lhn-check-auth-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const pair = await generateKeyPair('ES384');
  const file = join(dir, privateKeyFileName('c1', pair.kid));
  await writePrivateKeyFile(file, pair.privateJwk);
  return { dir, file, kid: pair.kid };
}

function centre(
  baseUrl: string,
  key: { file: string; kid: string },
  extra: { auth?: object; pull?: object } = {},
): CentreConfig {
  return parseCentre(
    {
      id: 'c1',
      name: 'Centre One',
      fhir: { baseUrl },
      auth: { clientId: 'client-1', privateKeyFile: key.file, kid: key.kid, ...extra.auth },
      cohort: { group: 'g1' },
      ...(extra.pull ? { pull: extra.pull } : {}),
    },
    join(tmpdir(), 'c1.yaml'),
  );
}

describe('onboarding check: request timeout', () => {
  it('when the EHR never answers, then discovery and token give up after the check timeout, not after 30 s', async () => {
    const key = await makeKey();
    const base = await startEhr(() => {
      // never answers: a hung or firewall-dropped authorization server
    });
    const started = Date.now();
    const report = await runCheck(centre(`${base}/fhir`, key), {
      fhirConfig: { requestTimeoutMs: 300, maxRetries: 0, maxRetryAfterSeconds: 1 },
    });
    const steps = Object.fromEntries(report.steps.map((s) => [s.id, s]));
    expect(steps.discovery).toMatchObject({ status: 'failed' });
    expect(steps.discovery!.reason).toMatch(/^timeout/);
    expect(steps.token).toMatchObject({ status: 'failed' });
    expect(steps.token!.reason).toMatch(/^timeout/);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 20_000);
});

describe('onboarding check: signing key step', () => {
  it('when the key is a 1024-bit RSA key, then the signing-key step fails before any token request and the token step is skipped', async () => {
    const key = await makeKey();
    const { base, tokenRequests } = await startTokenEhr();
    const small = join(key.dir, 'small.pem');
    const pem = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({
      type: 'pkcs8',
      format: 'pem',
    });
    await writeFile(small, pem, { mode: 0o600 });
    const report = await runCheck(
      centre(`${base}/fhir`, { file: small, kid: 'k-small' }, { auth: { alg: 'RS384' } }),
    );
    const step = report.steps.find((s) => s.id === 'key')!;
    expect(step).toMatchObject({ status: 'failed', required: true });
    expect(step.reason).toMatch(/^key_unusable: .*1024 bits; RS384 needs at least 2048/);
    expect(step.hint).toContain('`lhn-bridge keys generate --centre c1 --alg RS384`');
    expect(report.steps.find((s) => s.id === 'token')).toMatchObject({
      status: 'skipped',
      reason: 'needs a usable signing key',
    });
    expect(tokenRequests).toEqual([]);
    expect(report.ok).toBe(false);
  });

  it('when the keys folder is known and auth.kid is in its JWKS with the same key, then there is no signing-key step', async () => {
    const key = await makeKey();
    const { base } = await startTokenEhr();
    const report = await runCheck(centre(`${base}/fhir`, key), { keysDir: key.dir });
    expect(report.steps.map((s) => s.id)).not.toContain('key');
    expect(report.steps.find((s) => s.id === 'token')!.status).toBe('failed');
  });

  it('when auth.kid is not in the JWKS this service publishes, then the step says so: a note, or a failure when the EHR is told to fetch the JWKS (jku)', async () => {
    const key = await makeKey();
    const elsewhere = await mkdtemp(join(tmpdir(), 'lhn-check-keys-'));
    cleanups.push(() => rm(elsewhere, { recursive: true, force: true }));
    const { base } = await startTokenEhr();
    const plain = await runCheck(centre(`${base}/fhir`, key), { keysDir: elsewhere });
    const note = plain.steps.find((s) => s.id === 'key')!;
    expect(note.status).toBe('ok');
    expect(note.reason).toBe(
      `kid ${key.kid} is not in the JWKS this service publishes (keysDir ${elsewhere})`,
    );
    expect(note.hint).toContain('pasted copy of the JWKS');
    const withJku = await runCheck(
      centre(`${base}/fhir`, key, {
        auth: { alg: 'ES384', jku: 'https://bridge.example/.well-known/jwks.json' },
      }),
      { keysDir: elsewhere },
    );
    const failed = withJku.steps.find((s) => s.id === 'key')!;
    expect(failed.status).toBe('failed');
    expect(failed.hint).toContain('`lhn-bridge keys jwks`');
    expect(failed.hint).not.toContain('pasted');
  });

  it('when the published JWKS has another public key under auth.kid, then the step fails naming the stale key', async () => {
    const key = await makeKey();
    const other = await makeKey();
    // A stale key file in the published folder carries this centre's kid.
    const stale = await generateKeyPair('ES384');
    await writePrivateKeyFile(join(other.dir, privateKeyFileName('c1', key.kid)), {
      ...stale.privateJwk,
      kid: key.kid,
    });
    const { base } = await startTokenEhr();
    const report = await runCheck(
      centre(`${base}/fhir`, key, {
        auth: { jku: 'https://bridge.example/.well-known/jwks.json' },
      }),
      { keysDir: other.dir },
    );
    const step = report.steps.find((s) => s.id === 'key')!;
    expect(step.status).toBe('failed');
    expect(step.reason).toContain(`another public key under kid ${key.kid}`);
  });
});

describe('onboarding check: scopes the pull needs', () => {
  /** A loopback EHR that issues a token granting `scope`; FHIR requests answer 503. */
  async function startGrantingEhr(scope: string): Promise<string> {
    let base = '';
    base = await startEhr((req, res) => {
      if (req.url === '/fhir/.well-known/smart-configuration')
        return json(res, 200, { token_endpoint: `${base}/token` });
      if (req.url === '/token')
        return json(res, 200, { access_token: 'at', token_type: 'bearer', expires_in: 300, scope });
      json(res, 503, {});
    });
    return base;
  }
  const pull = { resourceTypes: ['Patient', 'Observation', 'Medication'] };

  it('when the cohort Group and Medication are granted read only (v2 .r), then the scopes step is ok: neither is searched', async () => {
    const key = await makeKey();
    const scopes = [
      'system/Patient.rs',
      'system/Observation.rs',
      'system/Medication.r',
      'system/Group.r',
    ];
    const base = await startGrantingEhr(scopes.join(' '));
    const report = await runCheck(centre(`${base}/fhir`, key, { auth: { scopes }, pull }));
    const step = report.steps.find((s) => s.id === 'scopes')!;
    expect(step.status, step.reason).toBe('ok');
  });

  it('when a v1 centre lacks Observation and Group, then the hint suggests only the v1 .read form', async () => {
    const key = await makeKey();
    const scopes = ['Patient', 'Observation', 'Medication', 'Group'].map((t) => `system/${t}.read`);
    const base = await startGrantingEhr('system/Patient.read system/Medication.read');
    const report = await runCheck(centre(`${base}/fhir`, key, { auth: { scopes }, pull }));
    const step = report.steps.find((s) => s.id === 'scopes')!;
    expect(step.status).toBe('failed');
    expect(step.reason).toBe('no read+search scope for: Observation; no read scope for: Group');
    expect(step.hint).toBe(
      'Ask centre IT to grant client "client-1": system/Observation.read system/Group.read, or adjust auth.scopes in the centre file.',
    );
  });

  it('when a v2 centre lacks Group, then the hint suggests system/Group.r (read is all the cohort needs)', async () => {
    const key = await makeKey();
    const scopes = ['system/Patient.rs', 'system/Observation.rs', 'system/Medication.r'];
    const base = await startGrantingEhr(scopes.join(' '));
    const report = await runCheck(centre(`${base}/fhir`, key, { auth: { scopes }, pull }));
    const step = report.steps.find((s) => s.id === 'scopes')!;
    expect(step.status).toBe('failed');
    expect(step.reason).toBe('no read scope for: Group');
    expect(step.hint).toContain(': system/Group.r (SMART v1 equivalents');
  });
});
