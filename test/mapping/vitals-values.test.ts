// Vitals whose value cannot be used: what the visit's findings say about them (each case
// here is a rule no golden case shows on its own).
import { beforeAll, describe, expect, it } from 'vitest';
import { createMapper, type FhirResource } from '../../src/mapping/index.js';
import type { MappingPack } from '../../src/mapping/pack-schema.js';
import { loadIbdPack } from './support/pack.js';

let pack: MappingPack;
beforeAll(async () => {
  pack = await loadIbdPack();
});

const LOINC = 'http://loinc.org';
const HEIGHT = '8302-2';
const WEIGHT = '29463-7';
const BMI = '39156-5';

function vital(id: string, loinc: string, value: Record<string, unknown>): FhirResource {
  return {
    resourceType: 'Observation',
    id,
    status: 'final',
    subject: { reference: 'Patient/p1' },
    encounter: { reference: 'Encounter/e1' },
    effectiveDateTime: '2024-03-05T15:10:00Z',
    code: { coding: [{ system: LOINC, code: loinc }] },
    ...value,
  };
}

function findingsOf(
  observations: FhirResource[],
): { field: string; kind: string; message: string; resource?: string }[] {
  const mapper = createMapper(pack, {
    centreId: 'vitals-values',
    pseudonymSecret: 'vitals-values-secret-0123456789abcdef',
    timeZone: 'UTC',
  });
  const resources: FhirResource[] = [
    {
      resourceType: 'Patient',
      id: 'p1',
      gender: 'female',
      birthDate: '2012-05-20',
    },
    {
      resourceType: 'Encounter',
      id: 'e1',
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject: { reference: 'Patient/p1' },
      period: { start: '2024-03-05T15:00:00Z' },
    },
    ...observations,
  ];
  const visit = mapper.mapResources(resources).submissions.find((s) => s.kind === 'visit');
  if (!visit || visit.kind !== 'visit') throw new Error('no visit');
  return visit.findings.filter((f) => f.field !== 'pga' && f.field !== 'diagnosis');
}

describe('vitals without a numeric quantity value', () => {
  it('when a weight is a valueInteger, then a missing-value finding names it and says so, not that none links', () => {
    const findings = findingsOf([vital('w1', WEIGHT, { valueInteger: 32 })]);
    const weight = findings.filter((f) => f.field === 'weight');
    expect(weight).toEqual([
      {
        field: 'weight',
        kind: 'missing-value',
        message:
          'a weight observation links to this visit but has no numeric quantity value (it has a valueInteger instead of a valueQuantity), so the visit has no weight',
        resource: 'Observation/w1',
      },
    ]);
  });

  it('when a height is a valueString or a Quantity without a value, then the text is never quoted', () => {
    const text = 'ht 140 cm per Dr Smith';
    const findings = findingsOf([
      vital('h1', HEIGHT, { valueString: text }),
      vital('w1', WEIGHT, {
        valueQuantity: { unit: 'kg', system: 'http://unitsofmeasure.org', code: 'kg' },
      }),
    ]);
    expect(findings.map((f) => [f.field, f.kind, f.resource])).toEqual([
      ['height', 'missing-value', 'Observation/h1'],
      ['weight', 'missing-value', 'Observation/w1'],
    ]);
    expect(findings[0]!.message).toContain('has a valueString');
    expect(findings[1]!.message).toContain('its valueQuantity has no value');
    expect(JSON.stringify(findings)).not.toMatch(/140|Smith/);
  });

  it('when a BMI has no numeric value, then nothing is reported (BMI reports no missing value)', () => {
    const findings = findingsOf([vital('b1', BMI, { valueString: '16.3' })]);
    expect(findings.filter((f) => f.field === 'bmi')).toEqual([]);
  });

  it('when a usable weight links as strongly, then the one without a numeric value is not mentioned', () => {
    const findings = findingsOf([
      vital('w1', WEIGHT, { valueString: '32 kg' }),
      vital('w2', WEIGHT, { valueQuantity: { value: 32, unit: 'kg' } }),
    ]);
    expect(findings.filter((f) => f.field === 'weight')).toEqual([]);
  });
});

describe('implausible vitals', () => {
  const message = (value: Record<string, unknown>): string[] =>
    findingsOf([vital('w1', WEIGHT, { valueQuantity: value })])
      .filter((f) => f.field === 'weight')
      .map((f) => `${f.kind}: ${f.message}`);

  it('when a converted weight is just under the range, then the message shows enough digits to say so', () => {
    expect(
      message({ value: 999.6, unit: 'g', system: 'http://unitsofmeasure.org', code: 'g' }),
    ).toEqual([
      'implausible-value: weight 999.6 "g" (0.9996 kg) is outside the plausible range 1-250 kg',
    ]);
    expect(
      message({ value: 250040, unit: 'g', system: 'http://unitsofmeasure.org', code: 'g' }),
    ).toEqual([
      'implausible-value: weight 250040 "g" (250.04 kg) is outside the plausible range 1-250 kg',
    ]);
  });

  it('when the unit text is free text and the code converts, then the value is quoted without the unit text', () => {
    const found = message({ value: 1000, unit: 'per mum 1000 lbs', code: '[lb_av]' });
    expect(found).toEqual([
      'implausible-value: weight 1000 (453.6 kg) is outside the plausible range 1-250 kg',
    ]);
  });
});
