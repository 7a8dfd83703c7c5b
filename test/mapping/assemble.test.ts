// Properties of the assembler that no single golden case shows: streaming equals batch,
// input order does not matter, newer versions replace older ones, output is deterministic
// and pseudonymous, and misuse fails loudly.
import { beforeAll, describe, expect, it } from 'vitest';
import { generateCentre, type GeneratedCentre } from '../../fixtures/generator/index.js';
import { createMapper, OverridesError, type FhirResource } from '../../src/mapping/index.js';
import type { MappingPack } from '../../src/mapping/pack-schema.js';
import { contentHash } from '../../src/registry/keys.js';
import { RegistrySubmissionSchema } from '../../src/registry/submission.js';
import { loadIbdPack } from './support/pack.js';

const SECRET = 'assemble-test-secret-0123456789abcdefgh';
let pack: MappingPack;
let centre: GeneratedCentre;
let resources: FhirResource[];

beforeAll(async () => {
  pack = await loadIbdPack();
  centre = generateCentre({ seed: 4242, patients: 40 });
  resources = [...centre.resources()] as FhirResource[];
});

function mapperFor(options: Partial<Parameters<typeof createMapper>[1]> = {}) {
  return createMapper(pack, {
    centreId: centre.centreId,
    pseudonymSecret: SECRET,
    timeZone: centre.timeZone,
    overrides: centre.centreOverrides,
    ...options,
  });
}

/** A deterministic shuffle (xorshift), so a failure can be replayed. */
function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = Math.abs(x) % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('assembler', () => {
  it('when resources are streamed one by one or mapped as a batch, then the results are identical', () => {
    const batch = mapperFor().mapResources(resources);
    const assembler = mapperFor().createAssembler();
    for (const r of resources) assembler.add(r);
    expect(assembler.finish()).toEqual(batch);
    expect(batch.stats.resources).toBe(resources.length);
    expect(batch.stats.visits).toBeGreaterThan(100);
  });

  it('when the input order is shuffled, then the output is byte-identical', () => {
    const expected = JSON.stringify(mapperFor().mapResources(resources).submissions);
    for (const seed of [1, 7, 99]) {
      expect(JSON.stringify(mapperFor().mapResources(shuffled(resources, seed)).submissions)).toBe(
        expected,
      );
    }
  });

  it('when a Bundle is added, then its entries are mapped as if added one by one', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: resources.map((resource) => ({ resource })),
    };
    expect(mapperFor().mapResources([bundle])).toEqual(mapperFor().mapResources(resources));
  });

  it('when every submission is checked, then it is schema-valid and its hash is the canonical content hash', () => {
    const result = mapperFor({ validate: true }).mapResources(resources);
    expect(result.stats.retractions).toBeGreaterThan(0);
    for (const s of result.submissions) {
      expect(RegistrySubmissionSchema.safeParse(s).success).toBe(true);
      const { submissionId: _id, contentHash: hash, ...content } = s;
      expect(contentHash(content)).toBe(hash);
    }
  });

  it('when a large centre is mapped without the validate option, then every submission is schema-valid and hashed over its canonical JSON', () => {
    // The assembler writes the canonical JSON of each visit by hand (no key sorting, no zod on
    // the hot path); this holds it to keys.ts canonicalJson and the registry schema over many
    // varied visits (findings, steroids, retractions, missing values).
    const large = generateCentre({ seed: 777, patients: 600 });
    const result = createMapper(pack, {
      centreId: large.centreId,
      pseudonymSecret: SECRET,
      timeZone: large.timeZone,
      overrides: large.centreOverrides,
    }).mapResources(large.resources() as Iterable<FhirResource>);
    expect(result.stats.visits).toBeGreaterThan(3000);
    expect(result.stats.retractions).toBeGreaterThan(0);
    const kinds = new Set<string>();
    let withSteroids = 0;
    for (const s of result.submissions) {
      const checked = RegistrySubmissionSchema.safeParse(s);
      expect(checked.success ? '' : JSON.stringify(checked.error.issues)).toBe('');
      const { submissionId: _id, contentHash: hash, ...content } = s;
      expect(contentHash(content)).toBe(hash);
      if (s.kind === 'visit') {
        for (const f of s.findings) kinds.add(f.kind);
        if (s.steroids.length > 0) withSteroids += 1;
      }
    }
    expect(withSteroids).toBeGreaterThan(0);
    expect(kinds.size).toBeGreaterThanOrEqual(6);
  });

  it('when the output is searched for patient identifiers, then no name, MRN, phone or address appears', () => {
    const text = JSON.stringify(mapperFor().mapResources(resources));
    for (const patientId of centre.patientIds) {
      const phi = centre.phiOfPatient(patientId);
      for (const value of [phi.given, phi.family, phi.mrn, phi.phone, phi.addressLine]) {
        expect(text).not.toContain(value);
      }
      expect(text).not.toContain(`"${patientId}"`);
    }
  });

  it('when the secret or the centre differs, then every key differs', () => {
    const a = mapperFor().mapResources(resources).submissions;
    const b = mapperFor({ pseudonymSecret: `${SECRET}-other` }).mapResources(resources).submissions;
    const c = mapperFor({ centreId: 'another-centre' }).mapResources(resources).submissions;
    const keys = (list: typeof a) => new Set(list.flatMap((s) => [s.patientKey, s.visitKey]));
    for (const key of keys(b)) expect(keys(a).has(key)).toBe(false);
    for (const key of keys(c)) expect(keys(a).has(key)).toBe(false);
  });

  it('when a newer version of an observation arrives, then it replaces the older one and the hash changes', () => {
    const pga = resources.find(
      (r) =>
        r.resourceType === 'Observation' &&
        (r as any).encounter &&
        (r as any).valueCodeableConcept &&
        (r as any).status === 'final',
    ) as any;
    const before = mapperFor().mapResources(resources).submissions;
    const answers = centre.centreOverrides.valueSets.pga.answers.filter((a) => 'code' in a) as {
      system: string;
      code: string;
      category: string;
    }[];
    const current = answers.find((a) => a.code === pga.valueCodeableConcept.coding[0].code)!;
    const other = answers.find((a) => a.category !== current.category)!;
    const newer = {
      ...pga,
      meta: { ...pga.meta, versionId: `${Number(pga.meta.versionId) + 1}` },
      valueCodeableConcept: { coding: [{ system: other.system, code: other.code }] },
    };
    const after = mapperFor().mapResources([...resources, newer]).submissions;
    const changed = after.filter((s, i) => s.submissionId !== before[i]!.submissionId);
    expect(changed).toHaveLength(1);
    expect(changed[0]!.visitKey).toBe(before[after.indexOf(changed[0]!)]!.visitKey);
    expect(changed[0]!.kind === 'visit' && changed[0]!.provenance).toContainEqual(
      expect.objectContaining({
        resourceType: 'Observation',
        id: pga.id,
        versionId: newer.meta.versionId,
      }),
    );
  });

  it('when a later version of an observation names another patient, then among many patients it counts for neither old patient nor twice, whatever the order', () => {
    // A PGA of one patient, corrected (version + 1) to a patient read much later, in a centre
    // large enough that the assembler's id filter has grown several times in between.
    const pga = resources.find(
      (r) =>
        r.resourceType === 'Observation' &&
        (r as any).encounter &&
        (r as any).valueCodeableConcept &&
        (r as any).status === 'final',
    ) as any;
    const from = pga.subject.reference as string;
    const to = (resources.filter((r) => r.resourceType === 'Patient').at(-1) as any).id as string;
    expect(`Patient/${to}`).not.toBe(from);
    const { encounter: _encounter, ...rest } = pga;
    const moved = {
      ...rest,
      meta: { ...pga.meta, versionId: `${Number(pga.meta.versionId) + 1}` },
      subject: { reference: `Patient/${to}` },
      effectiveDateTime: '1999-01-01',
    };
    const withoutIt = mapperFor().mapResources(resources.filter((r) => r !== pga)).submissions;
    for (const input of [
      [...resources, moved],
      [moved, ...resources],
      shuffled([...resources, moved], 5),
    ]) {
      const out = mapperFor().mapResources(input).submissions;
      // Dated far from every visit, the moved version links to none of the new patient's.
      expect(out).toEqual(withoutIt);
    }
  });

  it('when every resource arrives twice, newer versions first, then the output is that of the newer versions alone', () => {
    // Each resource gets an older copy (versionId one lower, one status the pack would count
    // differently) read after it: the newer copy must win whatever the order.
    const older = resources
      .filter(
        (r) =>
          typeof (r as any).meta?.versionId === 'string' && Number((r as any).meta.versionId) > 1,
      )
      .map((r) => ({
        ...r,
        meta: { ...(r as any).meta, versionId: String(Number((r as any).meta.versionId) - 1) },
        status: 'entered-in-error',
      }));
    const bumped = resources.map((r) =>
      typeof (r as any).meta?.versionId === 'string' && Number((r as any).meta.versionId) === 1
        ? { ...r, meta: { ...(r as any).meta, versionId: '2' } }
        : r,
    );
    const olderOfBumped = resources
      .filter((r) => (r as any).meta?.versionId === '1' && 'status' in r)
      .map((r) => ({ ...r, status: 'entered-in-error' }));
    expect(olderOfBumped.length + older.length).toBeGreaterThan(100);
    const expected = mapperFor().mapResources(bumped).submissions;
    const result = mapperFor().mapResources([...bumped, ...older, ...olderOfBumped]).submissions;
    expect(result).toEqual(expected);
  });

  it('when a newer refuted version of a Condition is read before the older one, then the older does not count', () => {
    const condition = resources.find((r) => r.resourceType === 'Condition') as any;
    const refuted = {
      ...condition,
      meta: { ...condition.meta, versionId: String(Number(condition.meta?.versionId ?? '1') + 1) },
      verificationStatus: {
        coding: [
          {
            system: 'http://terminology.hl7.org/CodeSystem/condition-ver-status',
            code: 'refuted',
          },
        ],
      },
    };
    const replaced = resources.map((r) => (r === condition ? refuted : r));
    const expected = mapperFor().mapResources(replaced).submissions;
    expect(mapperFor().mapResources([refuted, ...resources]).submissions).toEqual(expected);
    expect(expected).not.toEqual(mapperFor().mapResources(resources).submissions);
  });

  it('when encounters in a visit status have a class of an unknown system, then one finding per class says how to add it', () => {
    const extra = ['e-x1', 'e-x2'].map((id) => ({
      resourceType: 'Encounter',
      id,
      status: 'finished',
      class: { system: 'urn:oid:1.2.840.114350.1.72.1.7.7.10.696784.13260', code: '5' },
      subject: { reference: `Patient/${resources.find((r) => r.resourceType === 'Patient')!.id}` },
      period: { start: '2024-03-05T15:00:00Z' },
    }));
    const inpatient = {
      ...extra[0]!,
      id: 'e-x3',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    };
    const result = mapperFor().mapResources([...resources, ...extra, inpatient]);
    const classFindings = result.findings.filter((f) => f.field === 'visit.class');
    expect(classFindings).toEqual([
      expect.objectContaining({
        kind: 'unmapped-code',
        code: 'urn:oid:1.2.840.114350.1.72.1.7.7.10.696784.13260|5',
        message: expect.stringMatching(/^2 encounter\(s\).*mapping\.overrides\.visits\.classes/),
      }),
    ]);
    expect(result.submissions).toEqual(mapperFor().mapResources(resources).submissions);
  });

  it('when an HL7 class code is not an encounter class (a wrong-case amb), then it is reported; HL7 non-visit classes stay silent', () => {
    const patientId = resources.find((r) => r.resourceType === 'Patient')!.id;
    const ofClass = (id: string, cls: object) => ({
      resourceType: 'Encounter',
      id,
      status: 'finished',
      class: cls,
      subject: { reference: `Patient/${patientId}` },
      period: { start: '2024-03-05T15:00:00Z' },
    });
    const actCode = 'http://terminology.hl7.org/CodeSystem/v3-ActCode';
    const extra = [
      ofClass('e-amb', { system: actCode, code: 'amb' }),
      ofClass('e-amb2', { system: actCode, code: 'amb' }),
      ofClass('e-xyz', { system: actCode, code: 'XYZ' }),
      ofClass('e-hh', { system: actCode, code: 'HH' }),
      ofClass('e-ss', { code: 'SS' }),
      ofClass('e-none', {}),
    ];
    const result = mapperFor().mapResources([...resources, ...extra]);
    expect(
      result.findings
        .filter((f) => f.field === 'visit.class')
        .map((f) => [f.kind, f.code, f.message]),
    ).toEqual([
      [
        'unmapped-code',
        `${actCode}|XYZ`,
        expect.stringMatching(/^1 encounter\(s\) .* not an HL7 encounter class/),
      ],
      [
        'unmapped-code',
        `${actCode}|amb`,
        expect.stringMatching(/^2 encounter\(s\) .* HL7 class code 'amb'/),
      ],
      ['unmapped-code', undefined, expect.stringMatching(/^1 encounter\(s\) .* no class code/)],
    ]);
    expect(result.findings.find((f) => f.code === `${actCode}|amb`)!.message).toMatch(
      /case-sensitive: the outpatient visit class is 'AMB'/,
    );
    expect(result.submissions).toEqual(mapperFor().mapResources(resources).submissions);
  });

  it('when visit include rules are set, then other encounters of a visit class are not visits and one finding per type and department counts them', () => {
    const patientId = resources.find((r) => r.resourceType === 'Patient')!.id;
    const snomed = 'http://snomed.info/sct';
    const amb = (id: string, extra: object) => ({
      resourceType: 'Encounter',
      id,
      status: 'finished',
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject: { reference: `Patient/${patientId}` },
      period: { start: '2024-03-05T15:00:00Z' },
      ...extra,
    });
    const gi = { coding: [{ system: snomed, code: '394584008' }] };
    const infusion = {
      type: [{ coding: [{ system: 'urn:centre:visit-type', code: 'INF' }] }],
      location: [{ location: { reference: 'Location/infusion' } }],
    };
    const extra = [
      amb('e-gi', { serviceType: gi }),
      amb('e-dept', { location: [{ location: { reference: 'Location/gi-clinic' } }] }),
      amb('e-org', { serviceProvider: { reference: 'Organization/gi' } }),
      amb('e-inf1', infusion),
      amb('e-inf2', infusion),
      amb('e-none', {}),
    ];
    const overrides = {
      ...centre.centreOverrides,
      visits: {
        include: [
          { serviceType: { system: 'urn:oid:2.16.840.1.113883.6.96', code: '394584008' } },
          { location: 'Location/gi-clinic' },
          { serviceProvider: 'Organization/gi' },
        ],
      },
    };
    const result = mapperFor({ overrides }).mapResources([...extra]);
    const submitted = result.submissions.map(
      (s) => s.provenance.find((p) => p.resourceType === 'Encounter')!.id,
    );
    expect(submitted.sort()).toEqual(['e-dept', 'e-gi', 'e-org']);
    expect(
      result.findings
        .filter((f) => f.field === 'visit.include')
        .map((f) => [f.code, f.resource, f.message.slice(0, 16)]),
    ).toEqual([
      [undefined, undefined, '1 encounter(s) o'],
      ['urn:centre:visit-type|INF', 'Location/infusion', '2 encounter(s) o'],
    ]);
    // No rules (the pack default): every encounter of a visit class is a visit, as before.
    expect(mapperFor().mapResources([...extra]).submissions).toHaveLength(extra.length);
  });

  it('when encounters of a visit class have a status that is no visit status, then one run-level finding per status counts them (planned and cancelled stay silent)', () => {
    const patientId = resources.find((r) => r.resourceType === 'Patient')!.id;
    const amb = (id: string, status: string | undefined) => ({
      resourceType: 'Encounter',
      id,
      ...(status ? { status } : {}),
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
      subject: { reference: `Patient/${patientId}` },
      period: { start: '2024-03-05T15:00:00Z' },
    });
    const imp = {
      ...amb('e-imp', 'unknown'),
      class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    };
    const extra = [
      amb('e-ok', 'finished'),
      amb('e-u1', 'unknown'),
      amb('e-u2', 'unknown'),
      amb('e-r5', 'completed'),
      amb('e-leave', 'onleave'),
      amb('e-none', undefined),
      amb('e-planned', 'planned'),
      amb('e-cancelled', 'cancelled'),
      amb('e-prose', 'Jane Roe DOB 1990-01-01'),
      imp,
    ];
    const result = mapperFor().mapResources(extra);
    expect(result.submissions).toHaveLength(1);
    expect(
      result.findings
        .filter((f) => f.field === 'visit.status')
        .map((f) => [f.kind, f.code, f.message.slice(0, 16)]),
    ).toEqual([
      ['missing-value', undefined, '1 encounter(s) o'],
      ['unmapped-code', 'http://hl7.org/fhir/encounter-status|completed', '1 encounter(s) o'],
      ['unmapped-code', 'http://hl7.org/fhir/encounter-status|not-a-code', '1 encounter(s) o'],
      ['unmapped-code', 'http://hl7.org/fhir/encounter-status|onleave', '1 encounter(s) o'],
      ['unmapped-code', 'http://hl7.org/fhir/encounter-status|unknown', '2 encounter(s) o'],
    ]);
    expect(JSON.stringify(result.findings)).not.toMatch(/Jane|Roe|1990/);
    expect(result.findings.find((f) => f.code?.endsWith('|unknown'))!.message).toMatch(
      /status 'unknown', which is not a visit status of the pack \(finished, in-progress, arrived\)/,
    );
  });

  it('when a visit include rule is malformed, then the centre file is refused with its path', () => {
    expect(() =>
      mapperFor({ overrides: { visits: { include: [{ location: 'gi-clinic' }] } } }),
    ).toThrow(/visits\.include\[0\]\.location: expected a reference Location\/<id>/);
    expect(() =>
      mapperFor({
        overrides: {
          visits: { include: [{ location: 'Location/a', serviceProvider: 'Organization/b' }] },
        },
      }),
    ).toThrow(/visits\.include\[0\]: a visit include rule names exactly one of/);
  });

  it('when resource types the pack does not use arrive, then they are counted and ignored', () => {
    const extra = [
      { resourceType: 'Practitioner', id: 'dr' },
      { resourceType: 'Procedure', id: 'x', status: 'completed' },
    ];
    const result = mapperFor().mapResources([...resources, ...extra]);
    expect(result.stats.byResourceType.Practitioner).toBe(1);
    expect(result.submissions).toEqual(mapperFor().mapResources(resources).submissions);
  });

  it('when resources of every type arrive, then each type is counted, in first-seen order', () => {
    const input = [
      { resourceType: 'Practitioner', id: 'dr' },
      ...resources,
      { resourceType: 'Medication', id: 'med-x' },
      { resourceType: 'MedicationRequest', id: 'mr-x', status: 'active', intent: 'order' },
      { resourceType: 'Practitioner', id: 'dr2' },
    ];
    const expected: Record<string, number> = {};
    for (const r of input) expected[r.resourceType] = (expected[r.resourceType] ?? 0) + 1;
    const { stats } = mapperFor().mapResources(input);
    expect(Object.entries(stats.byResourceType)).toEqual(Object.entries(expected));
    expect(stats.resources).toBe(input.length);
  });

  it('when finish is called twice or add after finish, then it throws instead of losing data', () => {
    const assembler = mapperFor().createAssembler();
    assembler.finish();
    expect(() => assembler.finish()).toThrow(/already/);
    expect(() => assembler.add(resources[0]!)).toThrow(/finished/);
  });

  it('when the overrides are invalid, then creating the mapper fails with their path', () => {
    expect(() =>
      mapperFor({
        overrides: { settings: { birthDatePrecision: 'year' } },
        overridesSource: 'east.yaml',
      }),
    ).toThrow(OverridesError);
    expect(() => mapperFor({ overrides: { settings: { birthDatePrecision: 'year' } } })).toThrow(
      /settings\.birthDatePrecision/,
    );
  });

  it('when findings are counted, then stats.byKind matches the flattened findings', () => {
    const result = mapperFor().mapResources(resources);
    const counted: Record<string, number> = {};
    for (const f of result.findings) counted[f.kind] = (counted[f.kind] ?? 0) + 1;
    expect(result.stats.byKind).toEqual(counted);
    const carried = result.submissions.flatMap((s) => (s.kind === 'visit' ? s.findings : []));
    expect(result.findings.slice(0, carried.length)).toEqual(carried);
  });
});

describe('assembler, visits that cannot be submitted', () => {
  it('when a visit encounter has no patient or no start, then an unattached finding says so and nothing is submitted', async () => {
    const mapper = createMapper(await loadIbdPack(), {
      centreId: 'c1',
      pseudonymSecret: SECRET,
      timeZone: 'UTC',
    });
    const ambulatory = { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' };
    const result = mapper.mapResources([
      {
        resourceType: 'Encounter',
        id: 'no-subject',
        status: 'finished',
        class: ambulatory,
        period: { start: '2024-03-05T10:00:00Z' },
      },
      {
        resourceType: 'Encounter',
        id: 'no-start',
        status: 'finished',
        class: ambulatory,
        subject: { reference: 'Patient/p1' },
      },
      {
        resourceType: 'Encounter',
        id: 'inpatient',
        status: 'finished',
        class: { ...ambulatory, code: 'IMP' },
      },
    ]);
    expect(result.submissions).toEqual([]);
    expect(result.findings.map((f) => `${f.kind} ${f.field} ${f.resource}`)).toEqual([
      'missing-value visit.patient Encounter/no-subject',
      'missing-value visit.date Encounter/no-start',
    ]);
    expect(result.stats.byKind).toEqual({ 'missing-value': 2 });
  });

  it('when a visit period.start is not a valid FHIR dateTime, then the finding says so (not that it has none) and does not quote it', async () => {
    const mapper = createMapper(await loadIbdPack(), {
      centreId: 'c',
      pseudonymSecret: 'x'.repeat(40),
      timeZone: 'UTC',
    });
    const result = mapper.mapResources([
      { resourceType: 'Patient', id: 'p1', gender: 'female', birthDate: '2012-05-20' },
      {
        resourceType: 'Encounter',
        id: 'bad-start',
        status: 'finished',
        class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'AMB' },
        subject: { reference: 'Patient/p1' },
        period: { start: '2024-13-45T15:00:00Z' },
      },
    ]);
    const dated = result.findings.filter((f) => f.field === 'visit.date');
    expect(dated).toHaveLength(1);
    expect(dated[0]!.message).toMatch(/period\.start is not a valid FHIR dateTime/);
    expect(dated[0]!.message).not.toContain('2024');
    expect(dated[0]!.resource).toBe('Encounter/bad-start');
  });
});
