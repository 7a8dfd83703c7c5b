import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.js';
import { loadCentreFile, loadCentres, parseCentre } from '../../src/config/centre.js';
import { loadServiceConfig } from '../../src/config/service.js';
import { SECRET } from '../sync/helpers.js';

const valid = {
  id: 'centre-a',
  name: 'Centre A',
  fhir: { baseUrl: 'https://ehr.example.org/fhir/R4' },
  auth: { clientId: 'abc', privateKeyFile: 'keys/a.json', kid: 'k1' },
  cohort: { group: 'ibd-cohort' },
};

describe('centre files', () => {
  it('when a file is valid, then defaults are filled and file paths resolved', () => {
    const centre = parseCentre(valid, '/etc/lhn/centres/a.yaml');
    expect(centre.timeZone).toBe('UTC');
    expect(centre.pull.mode).toBe('search');
    expect(centre.limits.maxConcurrentRequests).toBe(4);
    expect(centre.auth.alg).toBe('ES384');
    expect(centre.auth.privateKeyFile).toBe('/etc/lhn/centres/keys/a.json');
  });

  it('when auth.scopes uses SMART v1 forms (Oracle Health lists only system/<Type>.read), then the file parses and the v1 scopes cover what the pull needs', async () => {
    const { findMissingScopes } = await import('../../src/auth/scopes.js');
    const v2 = parseCentre(valid, 'a.yaml').auth.scopes;
    for (const scopes of [['system/*.read'], v2.map((s) => s.replace(/\.rs$/, '.read'))]) {
      const centre = parseCentre({ ...valid, auth: { ...valid.auth, scopes } }, 'a.yaml');
      expect(centre.auth.scopes).toEqual(scopes);
      expect(findMissingScopes(scopes, v2)).toEqual([]);
    }
  });

  it('when a scope has an empty permission (system/Observation.), then it is refused; v1 and non-empty v2 forms parse', () => {
    const parse = (scope: string) =>
      parseCentre({ ...valid, auth: { ...valid.auth, scopes: [scope] } }, 'a.yaml');
    for (const bad of [
      'system/Observation.',
      'system/Observation.?category=x',
      'system/Observation.sr',
    ])
      expect(() => parse(bad), bad).toThrow(/auth\.scopes\[0\]: expected a SMART scope/);
    for (const good of [
      'system/Observation.read',
      'system/Observation.write',
      'system/Observation.*',
      'system/*.read',
      'system/Observation.r',
      'system/Observation.s',
      'system/Observation.rs',
      'system/Observation.cruds',
      'system/Observation.rs?category=laboratory',
    ])
      expect(parse(good).auth.scopes, good).toEqual([good]);
  });

  it('when a file has several problems, then all are reported with their paths', () => {
    const bad = {
      ...valid,
      id: 'Bad Id',
      fhir: { baseUrl: 'http://ehr.example.org/fhir' },
      limits: { requestsPerSecond: -1 },
      timeZone: 'Mars/Olympus',
      extra: true,
    };
    let error: unknown;
    try {
      parseCentre(bad, 'c.yaml');
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const paths = (error as ConfigError).issues.map((i) => i.path);
    expect(paths).toEqual(
      expect.arrayContaining(['id', 'fhir.baseUrl', 'limits.requestsPerSecond', 'timeZone']),
    );
    expect((error as ConfigError).message).toMatch(/https/);
  });

  it('when pull.searches names extra parameters per type, then they are kept as given', () => {
    const centre = parseCentre(
      {
        ...valid,
        pull: {
          searches: {
            Observation: [
              { category: 'vital-signs' },
              { category: 'exam', 'code:in': 'http://x/vs' },
            ],
          },
        },
      },
      'c.yaml',
    );
    expect(centre.pull.searches).toEqual({
      Observation: [{ category: 'vital-signs' }, { category: 'exam', 'code:in': 'http://x/vs' }],
    });
    expect(parseCentre(valid, 'c.yaml').pull.searches).toBeUndefined();
  });

  it('when pull.searches sets a parameter lhn-bridge sets, is empty or names Medication, then each is reported with its path', () => {
    let error: unknown;
    try {
      parseCentre(
        {
          ...valid,
          pull: {
            searches: {
              Observation: [{ patient: 'p1' }, {}, { 'bad name': 'x' }, { code: '' }],
              Encounter: [{ '_lastUpdated:missing': 'true' }],
              Medication: [{ code: 'x' }],
            },
          },
        },
        'c.yaml',
      );
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toMatch(
      /pull\.searches\.Observation\[0\]\.patient: is set by lhn-bridge itself/,
    );
    expect(message).toMatch(/pull\.searches\.Observation\[1\]: needs at least one parameter/);
    expect(message).toMatch(
      /pull\.searches\.Observation\[2\]\.bad name: is not a search parameter name/,
    );
    expect(message).toMatch(/pull\.searches\.Observation\[3\]\.code: must not be empty/);
    expect(message).toMatch(
      /pull\.searches\.Encounter\[0\]\._lastUpdated:missing: is set by lhn-bridge/,
    );
    expect(message).toMatch(/pull\.searches.*Medication/);
  });

  it('when http is used on loopback, then it is accepted', () => {
    expect(
      parseCentre({ ...valid, fhir: { baseUrl: 'http://127.0.0.1:9999/fhir' } }, 'c.json').fhir
        .baseUrl,
    ).toBe('http://127.0.0.1:9999/fhir');
  });

  it('when a folder holds a broken file and a duplicate id, then both are reported', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'centres-'));
    writeFileSync(join(dir, 'a.json'), JSON.stringify(valid));
    writeFileSync(join(dir, 'b.json'), JSON.stringify(valid));
    writeFileSync(join(dir, 'c.yaml'), 'id: [unclosed');
    await expect(loadCentres(dir)).rejects.toThrow(/duplicate centre id[\s\S]*|not valid YAML/);
    await expect(loadCentreFile(join(dir, 'missing.yaml'))).rejects.toThrow(
      /cannot read the centre file: the file does not exist \(ENOENT\)/,
    );
  });
});

describe('service config', () => {
  it('when the secret is missing and a number is malformed, then both are reported', () => {
    expect(() => loadServiceConfig({ LHN_API_PORT: 'eighty' })).toThrow(
      /LHN_API_PORT[\s\S]*pseudonymSecret/,
    );
  });

  it('when the environment is complete, then it parses with defaults', () => {
    const config = loadServiceConfig({
      LHN_PSEUDONYM_SECRET: SECRET,
      REDIS_URL: 'redis://10.0.0.1:6379',
    });
    expect(config.redis.url).toBe('redis://10.0.0.1:6379');
    expect(config.redis.prefix).toBe('lhn');
    expect(config.fhir.maxRetryAfterSeconds).toBe(300);
  });
});

describe('centre file messages centre IT can act on', () => {
  const problems = (data: unknown): string[] => {
    try {
      parseCentre(data, 'c.yaml');
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`);
      throw err;
    }
    return [];
  };

  it('when baseUrl has no scheme, then the file error names fhir.baseUrl (no "Invalid URL" crash)', () => {
    expect(problems({ ...valid, fhir: { baseUrl: 'ehr.example.org/fhir' } })).toEqual([
      expect.stringMatching(/^fhir\.baseUrl: expected an absolute URL with its scheme/),
    ]);
  });

  it('when bulk mode is given a roster, then the file is refused unless the whole-EHR export is accepted', () => {
    const roster = { ...valid, cohort: { roster: 'roster.txt' } };
    expect(problems({ ...roster, pull: { mode: 'bulk' } })).toEqual([
      expect.stringMatching(
        /^cohort: bulk mode with a roster would export every patient of the EHR/,
      ),
    ]);
    expect(problems({ ...roster, pull: { mode: 'bulk', patientLevelExport: true } })).toEqual([]);
    expect(problems(roster)).toEqual([]);
    expect(problems({ ...valid, pull: { mode: 'bulk' } })).toEqual([]);
  });

  it('when a key is misspelt, then it is reported at its path with the setting meant', () => {
    expect(
      problems({
        ...valid,
        limts: {},
        pull: { pagesize: 5 },
        fhir: { ...valid.fhir, tokenurl: 'x' },
      }),
    ).toEqual(
      expect.arrayContaining([
        'limts: unknown setting; did you mean "limits"?',
        'pull.pagesize: unknown setting; did you mean "pageSize"?',
        'fhir.tokenurl: unknown setting; did you mean "tokenUrl"?',
      ]),
    );
  });

  it('when a setting is missing or the cohort is misspelt, then the message says what is expected', () => {
    const found = problems({
      ...valid,
      auth: { clientId: 'a', privateKeyFile: 'k' },
      cohort: { grop: 'g' },
    });
    expect(found).toEqual(
      expect.arrayContaining([
        'auth.kid: required (expected string)',
        expect.stringMatching(/^cohort: expected either group: .* or roster: /),
      ]),
    );
  });

  it('when the time zone is unknown, then the value and an example are given', () => {
    expect(problems({ ...valid, timeZone: 'America/NewYork' })).toEqual([
      expect.stringMatching(
        /^timeZone: unknown IANA time zone "America\/NewYork" \(e\.g\. America\/New_York/,
      ),
    ]);
  });

  it('when schedule.cron is not a 5-field cron expression, then the file is refused', () => {
    for (const cron of ['every day', '0 2 * *', '61 2 * * *', '*/5 * * * * *'])
      expect(problems({ ...valid, schedule: { cron } })).toEqual([
        expect.stringMatching(/^schedule\.cron: .*e\.g\. "0 2 \* \* \*"/),
      ]);
    for (const cron of ['0 2 * * *', '30 3 * * 0', '@daily'])
      expect(problems({ ...valid, schedule: { cron } })).toEqual([]);
  });

  it('when the centres folder does not exist, then the error names it and LHN_CENTRES_DIR', async () => {
    await expect(loadCentres(join(tmpdir(), 'no-such-centres-folder-x'))).rejects.toThrow(
      /centres folder does not exist \(set LHN_CENTRES_DIR/,
    );
  });
});

describe('service environment messages', () => {
  const message = (env: Record<string, string>) => {
    try {
      loadServiceConfig(env);
    } catch (err) {
      return (err as Error).message;
    }
    return '';
  };

  it('when the pseudonym secret is missing, then the message says which variable to set', () => {
    expect(message({})).toMatch(/pseudonymSecret: required: set LHN_PSEUDONYM_SECRET/);
  });

  it('when a variable holds a bad value, then the message names the variable, never a secret', () => {
    const text = message({
      LHN_PSEUDONYM_SECRET: SECRET,
      LHN_REDIS_URL: 'localhost:6379',
      HTTPS_PROXY: 'ftp://proxy',
      LHN_REGISTRY_AUTH: '{"type":"bearer","token":"tok-SECRET-1"',
      LHN_API_KEYS: '[{"name":"a","role":"root","sha256":"ab"}]',
    });
    expect(text).toMatch(/redis\.url: .*\(set by LHN_REDIS_URL\)/);
    expect(text).toMatch(/outbound\.proxyUrl: .*\(set by HTTPS_PROXY\)/);
    expect(text).toMatch(/api\.keys\[0\]\.role: .*\(set by LHN_API_KEYS\)/);
    expect(text).toMatch(/LHN_REGISTRY_AUTH: expected JSON/);
    expect(text).not.toMatch(/tok-SECRET-1/);
  });

  it('when LHN_CONFIG names a missing file or has an unknown key, then both say so', () => {
    expect(message({ LHN_CONFIG: join(tmpdir(), 'no-such-lhn-config.yaml') })).toMatch(
      /cannot read the config file named by LHN_CONFIG: the file does not exist \(ENOENT\)/,
    );
    const dir = mkdtempSync(join(tmpdir(), 'svc-'));
    writeFileSync(join(dir, 'c.yaml'), 'redis:\n  urll: redis://x\n');
    expect(message({ LHN_CONFIG: join(dir, 'c.yaml'), LHN_PSEUDONYM_SECRET: SECRET })).toMatch(
      /redis\.urll: unknown setting; did you mean "url"\?/,
    );
  });
});
