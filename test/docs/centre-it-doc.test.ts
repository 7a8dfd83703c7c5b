// docs/centre-it.md's vendor notes are what centre IT follows when registering lhn-bridge;
// the Oracle Health note must match what Oracle documents (SMART v1 scopes, JWT client
// authentication, one export at a time, files on the FHIR host) and what the config accepts.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseCentre } from '../../src/config/centre.js';

const doc = readFileSync(new URL('../../docs/centre-it.md', import.meta.url), 'utf8');
const oracle = /- \*\*Oracle Health \(Cerner\)\*\*[\s\S]*?(?=\n- \*\*)/.exec(doc)?.[0] ?? '';

describe('docs/centre-it.md, Oracle Health note', () => {
  it('when centre IT reads the Oracle note, then it names v1 scopes and auth.scopes, JWT authentication with the JWKS, one export at a time and files on the FHIR host', () => {
    expect(oracle).not.toBe('');
    expect(oracle).toMatch(/`system\/<Type>\.read`/);
    expect(oracle).toMatch(/`auth\.scopes`/);
    expect(oracle).toMatch(/`private_key_jwt`/);
    expect(oracle).toMatch(/JWKS/);
    expect(oracle).toMatch(/`invalid_client`/);
    expect(oracle).toMatch(/one export per client/);
    expect(oracle).toMatch(/`requiresAccessToken: true`/);
    expect(oracle).not.toMatch(/pre-signed/);
  });

  it('when the note’s example v1 scopes go into a centre file, then the file parses', () => {
    const example = /`scopes: \[([^\]]*)\]`/.exec(oracle)?.[1];
    expect(example).toBeDefined();
    const scopes = example!
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '...');
    expect(scopes.length).toBeGreaterThan(0);
    const centre = parseCentre(
      {
        id: 'oracle-a',
        name: 'Oracle A',
        fhir: { baseUrl: 'https://fhir-ehr.example.com/r4/tenant' },
        auth: { clientId: 'abc', privateKeyFile: 'k.json', kid: 'k1', scopes },
        cohort: { group: 'g' },
      },
      'a.yaml',
    );
    expect(centre.auth.scopes).toEqual(scopes);
  });
});
