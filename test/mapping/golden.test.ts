// Golden fixtures: every assembly rule and edge case has an input Bundle, the exact NDJSON it
// must produce, and a hand-written clinical expectation (case.json `expect`) that the output
// is also checked against, so a regenerated expected.ndjson cannot silently change meaning.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GOLDEN_CENTRE_ID,
  GOLDEN_SECRET,
  listGoldenCases,
  runGoldenCase,
  toNdjson,
  type GoldenExpectation,
} from '../../fixtures/golden/run-golden.js';
import type { MappingPack } from '../../src/mapping/pack-schema.js';
import { pseudonymKey } from '../../src/registry/keys.js';
import {
  RegistrySubmissionSchema,
  type RegistrySubmission,
} from '../../src/registry/submission.js';
import { loadIbdPack } from './support/pack.js';

let pack: MappingPack;
beforeAll(async () => {
  pack = await loadIbdPack();
});

function findingLabels(s: RegistrySubmission): string[] {
  if (s.kind !== 'visit') return [];
  return s.findings
    .map((f) =>
      ['missing-pga', 'missing-diagnosis', 'missing-birth-date', 'text-only-medication'].includes(
        f.kind,
      )
        ? f.kind
        : `${f.kind}:${f.field}`,
    )
    .sort();
}

function checkExpectation(s: RegistrySubmission, e: GoldenExpectation): void {
  expect(s.kind).toBe(e.kind);
  if (s.kind === 'retraction') {
    expect(s.reason).toBe(e.reason);
    return;
  }
  expect({
    date: s.visit.date,
    type: s.visit.type,
    pga: s.pga,
    remission: s.remission,
    steroidUse: s.steroidUse,
    steroids: s.steroids.map((x) => ({ ingredient: x.ingredient, matchedBy: x.matchedBy })),
    height: s.height?.value ?? null,
    weight: s.weight?.value ?? null,
    bmi: s.bmi?.value ?? null,
    diagnosis: s.diagnosis,
    birthDate: s.patient.birthDate,
    age: s.patient.ageAtVisitMonths,
    sex: s.patient.sex,
    findings: findingLabels(s),
  }).toEqual({
    date: e.date,
    type: e.type,
    pga: e.pga,
    remission: e.remission,
    steroidUse: e.steroidUse,
    steroids: e.steroids,
    height: e.height,
    weight: e.weight,
    bmi: e.bmi,
    diagnosis: e.diagnosis,
    birthDate: e.birthDate,
    age: e.age,
    sex: e.sex,
    findings: [...((e.findings as string[]) ?? [])].sort(),
  });
  for (const included of (e.provenance_includes as string[] | undefined) ?? []) {
    expect(s.provenance.map((p) => `${p.resourceType}/${p.id}`)).toContain(included);
  }
}

describe('golden fixtures', () => {
  const cases = listGoldenCases();

  it('when the golden folder is listed, then there are cases for every rule family', () => {
    const families = new Set(cases.map((c) => c.name.split('-')[0]));
    for (const f of [
      'visit',
      'pga',
      'steroid',
      'budesonide',
      'vitals',
      'diagnosis',
      'patient',
      'centre',
      'time',
    ]) {
      expect(families).toContain(f);
    }
  });

  for (const goldenCase of cases) {
    it(`when ${goldenCase.name} is mapped, then the output equals expected.ndjson and the clinical expectation`, () => {
      const result = runGoldenCase(pack, goldenCase);
      const expected = readFileSync(join(goldenCase.dir, 'expected.ndjson'), 'utf8');
      expect(toNdjson(result)).toBe(expected);
      for (const s of result.submissions)
        expect(RegistrySubmissionSchema.safeParse(s).success).toBe(true);
      expect(result.submissions).toHaveLength(goldenCase.expect.length);
      for (const e of goldenCase.expect) {
        const visitKey = pseudonymKey(GOLDEN_SECRET, GOLDEN_CENTRE_ID, 'Encounter', e.encounter);
        const matches = result.submissions.filter((s) => s.visitKey === visitKey);
        expect(
          matches,
          `${goldenCase.name}: one submission for Encounter/${e.encounter}`,
        ).toHaveLength(1);
        checkExpectation(matches[0]!, e);
      }
    });
  }
});
