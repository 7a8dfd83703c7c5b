// The map command's quality summary lists unmapped codes with how many they stand for. The
// encounters left out by the visit include rules (and those of an unknown or missing class)
// are one run-level finding per type and department whose message counts them: the list used
// to say (1) for 3 encounters, merge departments and leave out a class with no code at all.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(root, 'bin', 'lhn-bridge.js');
const work = mkdtempSync(join(tmpdir(), 'lhn-map-summary-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const AMB = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' };
const TYPE = 'http://centre.example/visit-type';

function encounter(id: string, extra: Record<string, unknown>): Record<string, unknown> {
  return {
    resourceType: 'Encounter',
    id,
    status: 'finished',
    class: AMB,
    subject: { reference: 'Patient/p1' },
    period: { start: '2024-03-05T15:00:00Z' },
    ...extra,
  };
}

describe('map summary: unmapped codes', () => {
  const input = join(work, 'export');
  mkdirSync(input);
  const encounters = [
    encounter('gi', { location: [{ location: { reference: 'Location/gi-clinic' } }] }),
    ...['a1', 'a2', 'a3'].map((id) =>
      encounter(id, {
        type: [{ coding: [{ system: TYPE, code: 'FU' }] }],
        location: [{ location: { reference: 'Location/derm' } }],
      }),
    ),
    encounter('b1', {
      type: [{ coding: [{ system: TYPE, code: 'FU' }] }],
      location: [{ location: { reference: 'Location/infusion' } }],
    }),
    // A second patient's: the summary adds the counts of every patient's findings.
    ...['d1', 'd2'].map((id) => ({
      ...encounter(id, {
        type: [{ coding: [{ system: TYPE, code: 'FU' }] }],
        location: [{ location: { reference: 'Location/derm' } }],
      }),
      subject: { reference: 'Patient/p2' },
    })),
    encounter('c1', { class: { display: 'Outpatient' } }),
    encounter('c2', { class: { display: 'Outpatient' } }),
    encounter('u1', {
      status: 'unknown',
      location: [{ location: { reference: 'Location/gi-clinic' } }],
    }),
    encounter('u2', {
      status: 'unknown',
      location: [{ location: { reference: 'Location/gi-clinic' } }],
    }),
  ];
  writeFileSync(
    join(input, 'Patient.ndjson'),
    `${JSON.stringify({ resourceType: 'Patient', id: 'p1', gender: 'female', birthDate: '2012-05-20' })}\n` +
      `${JSON.stringify({ resourceType: 'Patient', id: 'p2', gender: 'male', birthDate: '2011-01-02' })}\n`,
  );
  writeFileSync(
    join(input, 'Encounter.ndjson'),
    `${encounters.map((e) => JSON.stringify(e)).join('\n')}\n`,
  );
  const centre = join(work, 'centre.yaml');
  writeFileSync(
    centre,
    [
      'id: summary-centre',
      'name: Summary Centre',
      'timeZone: UTC',
      'fhir: { baseUrl: "https://ehr.example.org/fhir" }',
      'auth: { clientId: x, privateKeyFile: k.json, kid: k1 }',
      'cohort: { group: g }',
      'mapping:',
      '  overrides:',
      '    visits:',
      '      include:',
      '        - { location: "Location/gi-clinic" }',
      '',
    ].join('\n'),
  );

  it('when encounters are left out by include rules or have no class code, then each line says how many, per department', async () => {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        [bin, 'map', '--mapping', join(root, 'mappings/ibd'), '--input', input, '--centre', centre],
        {
          env: { ...process.env, LHN_PSEUDONYM_SECRET: 'map-summary-test-secret-0123456789abcdef' },
        },
        (err, _stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('1 visit submission');
    const list = r.stderr.slice(r.stderr.indexOf('unmapped codes'));
    expect(list).toContain(`visit.include ${TYPE}|FU at Location/derm (5)`);
    expect(list).toContain(`visit.include ${TYPE}|FU at Location/infusion (1)`);
    expect(list).toContain('visit.class (no class code) (2)');
    expect(list).toContain('visit.status http://hl7.org/fhir/encounter-status|unknown (2)');
  });
});
