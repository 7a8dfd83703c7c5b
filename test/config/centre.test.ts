import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/config/errors.js';
import { loadCentreFile, loadCentres, parseCentre } from '../../src/config/centre.js';
import { loadServiceConfig } from '../../src/config/service.js';

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
    await expect(loadCentreFile(join(dir, 'missing.yaml'))).rejects.toThrow(/cannot read file/);
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
      LHN_PSEUDONYM_SECRET: 'x'.repeat(32),
      REDIS_URL: 'redis://10.0.0.1:6379',
    });
    expect(config.redis.url).toBe('redis://10.0.0.1:6379');
    expect(config.redis.prefix).toBe('lhn');
    expect(config.fhir.maxRetryAfterSeconds).toBe(300);
  });
});
