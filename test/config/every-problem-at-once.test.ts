// Every config problem is listed in one pass: the checks that look at several settings (the
// pseudonym secret's strength, a bulk pull with a roster) run even when another setting
// already failed (zod 4 skips refinements after an aborting issue such as a bad enum).
import { describe, expect, it } from 'vitest';
import { parseCentre } from '../../src/config/centre.js';
import { ConfigError } from '../../src/config/errors.js';
import { loadServiceConfig } from '../../src/config/service.js';

function problems(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map((i) => i.path);
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const centre = {
  id: 'c-one',
  name: 'C',
  fhir: { baseUrl: 'https://ehr.example/fhir' },
  auth: { clientId: 'x', privateKeyFile: 'k.json', kid: 'k' },
  cohort: { roster: 'r.txt' },
  pull: { mode: 'bulk' },
};

describe('every config problem at once', () => {
  it('when the secret is short and the log level unknown, then both are reported', () => {
    expect(
      problems(() =>
        loadServiceConfig({ LHN_PSEUDONYM_SECRET: 'short', LHN_LOG_LEVEL: 'verbose' }),
      ).sort(),
    ).toEqual(['log.level', 'pseudonymSecret']);
  });

  it('when the secret is not a string and another setting is wrong, then only those are reported', () => {
    expect(
      problems(() => loadServiceConfig({ LHN_CONFIG: undefined, LHN_LOG_LEVEL: 'verbose' })).sort(),
    ).toEqual(['log.level', 'pseudonymSecret']);
  });

  it('when a bulk roster centre also has a bad alg, then both are reported', () => {
    expect(
      problems(() =>
        parseCentre({ ...centre, auth: { ...centre.auth, alg: 'RS256' } }, '/tmp/c.yaml'),
      ).sort(),
    ).toEqual(['auth.alg', 'cohort']);
  });

  it('when a bulk roster centre accepts the whole-EHR export, then a bad alg is the only problem', () => {
    expect(
      problems(() =>
        parseCentre(
          {
            ...centre,
            auth: { ...centre.auth, alg: 'RS256' },
            pull: { mode: 'bulk', patientLevelExport: true },
          },
          '/tmp/c.yaml',
        ),
      ),
    ).toEqual(['auth.alg']);
  });
});
