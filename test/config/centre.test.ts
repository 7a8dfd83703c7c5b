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
