// A centre's mapping pack and overrides are checked when centres are loaded for serve /
// worker / sync and by the onboarding check, not first by every sync: a missing pack and an
// override typo are reported at start, all at once, with the centre file, the setting's
// path and (for a typo) the setting it was meant to be.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCentres, parseCentre } from '../../src/config/centre.js';
import { ConfigError } from '../../src/config/errors.js';
import { createCentreLoadCheck } from '../../src/onboarding/centre-mapping.js';
import { runCheck } from '../../src/onboarding/check.js';
import { loadMappingPack, MappingPackError } from '../../src/packs/load-pack.js';

const MAPPINGS = resolve(import.meta.dirname, '../../mappings');
const work = mkdtempSync(join(tmpdir(), 'lhn-centre-mapping-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function centreData(id: string, mapping: unknown, extra: Record<string, unknown> = {}) {
  return {
    id,
    name: id,
    fhir: { baseUrl: 'https://ehr.example.org/fhir' },
    auth: { clientId: 'c', privateKeyFile: 'key.jwk', kid: 'k' },
    cohort: { group: 'ibd' },
    mapping,
    ...extra,
  };
}

function centresDir(name: string, files: Record<string, unknown>): string {
  const dir = join(work, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'key.jwk'), '{}');
  chmodSync(join(dir, 'key.jwk'), 0o600);
  for (const [file, data] of Object.entries(files))
    writeFileSync(join(dir, file), JSON.stringify(data));
  return dir;
}

async function loadError(dir: string): Promise<ConfigError> {
  try {
    await loadCentres(dir, { check: createCentreLoadCheck(MAPPINGS) });
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected the centres to be refused');
}

describe('centre mapping checked at load', () => {
  it('when one centre names a missing pack and another has an override typo, then loading lists both with file, path and hint', async () => {
    const dir = centresDir('both', {
      'nopack.json': centreData('nopack', { pack: 'ibdd' }),
      'typo.json': centreData('typo', { pack: 'ibd', overrides: { vists: { classes: [] } } }),
      'good.json': centreData('good', { pack: 'ibd' }),
    });
    const err = await loadError(dir);
    expect(err.issues).toEqual([
      {
        path: `${join(dir, 'nopack.json')} mapping.pack`,
        message: `no mapping pack ibdd in ${MAPPINGS}`,
      },
      {
        path: `${join(dir, 'typo.json')} mapping.overrides.vists`,
        message: 'unknown setting; did you mean "visits"?',
      },
    ]);
  });

  it('when the centres are fine, then they load', async () => {
    const dir = centresDir('fine', {
      'a.json': centreData('aa', { pack: 'ibd' }),
      'b.json': centreData('bb', {
        pack: 'ibd',
        overrides: { visits: { classes: [{ system: 'urn:x', code: 'C', type: 'clinic' }] } },
      }),
    });
    const centres = await loadCentres(dir, { check: createCentreLoadCheck(MAPPINGS) });
    expect(centres.map((c) => c.id)).toEqual(['aa', 'bb']);
  });

  it('when loadCentres is called without a check (the check command), then the pack is not loaded', async () => {
    const dir = centresDir('nocheck', { 'nopack.json': centreData('nopack', { pack: 'ibdd' }) });
    expect((await loadCentres(dir)).map((c) => c.id)).toEqual(['nopack']);
  });
});

describe('loadMappingPack with no such folder', () => {
  it('then it says so once, with the pack name and the absolute mappings folder', async () => {
    const err = await loadMappingPack(join('mappings', 'ibdd')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MappingPackError);
    expect((err as MappingPackError).message).toBe(
      `no mapping pack ibdd in ${resolve('mappings')}`,
    );
    expect((err as MappingPackError).issues).toHaveLength(1);
  });
});

describe('onboarding check mapping step', () => {
  const offline = (async () => {
    throw new TypeError('fetch failed');
  }) as typeof fetch;

  it('when the overrides have a typo, then the check fails at the mapping step and names the setting', async () => {
    const centre = parseCentre(
      centreData('typo', { pack: 'ibd', overrides: { vists: {} } }),
      join(work, 'typo.json'),
    );
    const report = await runCheck(centre, { mappingsDir: MAPPINGS, fetch: offline });
    const step = report.steps.find((s) => s.id === 'mapping');
    expect(step).toMatchObject({ status: 'failed', required: true });
    expect(step?.details).toEqual([
      'mapping.overrides.vists: unknown setting; did you mean "visits"?',
    ]);
    expect(report.ok).toBe(false);
  });

  it('when the pack is missing, then the mapping step says where it was looked for', async () => {
    const centre = parseCentre(centreData('nopack', { pack: 'ibdd' }), join(work, 'n.json'));
    const report = await runCheck(centre, { mappingsDir: MAPPINGS, fetch: offline });
    expect(report.steps.find((s) => s.id === 'mapping')?.details).toEqual([
      `mapping.pack: no mapping pack ibdd in ${MAPPINGS}`,
    ]);
  });

  it('when pack and overrides are fine, then the mapping step is ok', async () => {
    const centre = parseCentre(centreData('ok', { pack: 'ibd' }), join(work, 'ok.json'));
    const report = await runCheck(centre, { mappingsDir: MAPPINGS, fetch: offline });
    expect(report.steps.find((s) => s.id === 'mapping')).toMatchObject({ status: 'ok' });
  });
});
