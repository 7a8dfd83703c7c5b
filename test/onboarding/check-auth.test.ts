// The onboarding check's auth steps against scripted loopback EHRs: request timeouts, the
// signing key, and which scopes the pull really needs.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, rm } from 'node:fs/promises';
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
