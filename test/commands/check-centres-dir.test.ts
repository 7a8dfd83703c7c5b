// `check <centre-id>` finds the centre in the same folder as `serve` and `worker`: --centres-dir,
// else the service config's centresDir (LHN_CENTRES_DIR, LHN_CONFIG), else ./centres. In the
// container (WORKDIR /app, LHN_CENTRES_DIR=/etc/lhn-bridge/centres) the documented
// `docker compose run api check <centre>` depends on it.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin', 'lhn-bridge.js');
const work = mkdtempSync(join(tmpdir(), 'lhn-check-dir-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function centreFile(dir: string, id: string): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, `${id}.json`),
    JSON.stringify({
      id,
      name: `Centre ${id}`,
      timeZone: 'UTC',
      // Nothing listens on port 1: the check fails fast at discovery, after finding the file.
      fhir: { baseUrl: 'http://127.0.0.1:1/fhir' },
      auth: { clientId: 'x', privateKeyFile: 'missing.jwk.json', kid: 'k1', alg: 'ES384' },
      cohort: { group: 'g' },
      mapping: { pack: 'ibd' },
    }),
  );
}

function run(
  args: string[],
  extraEnv: Record<string, string>,
  cwd: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith('LHN_')) env[k] = v;
  Object.assign(env, extraEnv);
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd, env }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('check <centre-id> and the centres folder', () => {
  const envDir = join(work, 'etc', 'centres');
  const flagDir = join(work, 'flag-centres');
  const cwd = join(work, 'app');
  centreFile(envDir, 'env-centre');
  centreFile(flagDir, 'flag-centre');
  centreFile(join(cwd, 'centres'), 'cwd-centre');

  it('when LHN_CENTRES_DIR is set and --centres-dir is not, then the centre is found there', async () => {
    const r = await run(
      ['check', 'env-centre', '--json', '--timeout-ms', '2000'],
      { LHN_CENTRES_DIR: envDir },
      cwd,
    );
    expect(r.stderr).not.toMatch(/no centre file|no centre with id/);
    expect(JSON.parse(r.stdout)).toMatchObject({ centreId: 'env-centre' });
  });

  it('when centresDir is set in the LHN_CONFIG file, then the centre is found there', async () => {
    const config = join(work, 'service.json');
    writeFileSync(config, JSON.stringify({ centresDir: envDir }));
    const r = await run(
      ['check', 'env-centre', '--json', '--timeout-ms', '2000'],
      { LHN_CONFIG: config },
      cwd,
    );
    expect(r.stderr).not.toMatch(/no centre file|no centre with id/);
    expect(JSON.parse(r.stdout)).toMatchObject({ centreId: 'env-centre' });
  });

  it('when --centres-dir is given too, then it wins over LHN_CENTRES_DIR', async () => {
    const r = await run(
      ['check', 'flag-centre', '--centres-dir', flagDir, '--json', '--timeout-ms', '2000'],
      { LHN_CENTRES_DIR: envDir },
      cwd,
    );
    expect(JSON.parse(r.stdout)).toMatchObject({ centreId: 'flag-centre' });
  });

  it('when neither is set, then ./centres is used', async () => {
    const r = await run(['check', 'cwd-centre', '--json', '--timeout-ms', '2000'], {}, cwd);
    expect(JSON.parse(r.stdout)).toMatchObject({ centreId: 'cwd-centre' });
  });

  it('when the centre is not in LHN_CENTRES_DIR, then the message names that folder', async () => {
    const r = await run(['check', 'nowhere'], { LHN_CENTRES_DIR: envDir }, cwd);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`no centre with id "nowhere" in ${envDir}`);
  });

  it('when asked for help, then the default of --centres-dir is said', async () => {
    const r = await run(['check', '--help'], {}, cwd);
    expect(r.stdout.replace(/\s+/g, ' ')).toMatch(/LHN_CENTRES_DIR, LHN_CONFIG, \.\/centres/);
  });
});

describe('check <centre-id> and the keys folder', () => {
  const keysDir = join(work, 'keys');
  const otherKeys = join(work, 'other-keys');
  const centres = join(work, 'key-centres');
  mkdirSync(otherKeys, { recursive: true });

  async function centreWithKey(): Promise<string> {
    const generated = await run(
      ['keys', 'generate', '--centre', 'kc', '--keys-dir', keysDir],
      {},
      work,
    );
    const kid = /^kid: (\S+)$/m.exec(generated.stdout)?.[1];
    const file = /^Private key written to (\S+) /m.exec(generated.stdout)?.[1];
    expect(kid && file).toBeTruthy();
    mkdirSync(centres, { recursive: true });
    writeFileSync(
      join(centres, 'kc.json'),
      JSON.stringify({
        id: 'kc',
        name: 'Centre kc',
        timeZone: 'UTC',
        fhir: { baseUrl: 'http://127.0.0.1:1/fhir' },
        auth: { clientId: 'x', privateKeyFile: file, kid, alg: 'ES384' },
        cohort: { group: 'g' },
        mapping: { pack: 'ibd' },
      }),
    );
    return kid!;
  }

  it('when keysDir is set only in the LHN_CONFIG file, then the check compares the key with that folder', async () => {
    const kid = await centreWithKey();
    const config = join(work, 'keys-service.json');
    writeFileSync(config, JSON.stringify({ centresDir: centres, keysDir: otherKeys }));
    const r = await run(
      ['check', 'kc', '--json', '--timeout-ms', '2000'],
      { LHN_CONFIG: config },
      work,
    );
    expect(r.stdout).toContain(
      `kid ${kid} is not in the JWKS this service publishes (keysDir ${otherKeys})`,
    );
    writeFileSync(config, JSON.stringify({ centresDir: centres, keysDir }));
    const ok = await run(
      ['check', 'kc', '--json', '--timeout-ms', '2000'],
      { LHN_CONFIG: config },
      work,
    );
    expect(ok.stdout).not.toContain('is not in the JWKS this service publishes');
  });

  it('when the service has a public address (LHN_PUBLIC_URL), then keys generate prints the JWKS URL to register at it', async () => {
    const r = await run(
      ['keys', 'generate', '--centre', 'kc', '--keys-dir', join(work, 'url-keys')],
      { LHN_PUBLIC_URL: 'https://bridge.example.org/' },
      work,
    );
    expect(r.stdout).toContain('https://bridge.example.org/.well-known/jwks.json');
    const plain = await run(
      ['keys', 'generate', '--centre', 'kc', '--keys-dir', join(work, 'url-keys')],
      {},
      work,
    );
    expect(plain.stdout).toContain('https://<this service>/.well-known/jwks.json');
  });
});
