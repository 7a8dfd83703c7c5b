// Property: for random Observation, Patient and MedicationRequest resources (including odd
// shapes: primitive extensions, nulls in arrays, two choice values at once, unusual
// references, contained resources), every view gives exactly the same rows, or the same
// error, with the fast path (generated view code, and the select runners with fast
// closures) as with fhirpath.js alone. The IBD pack's views get the same check on generator
// resources with random changes of shape (arrays for singles, nulls, nested arrays, strings
// for objects, primitive extensions, extra choice values).
import { readdirSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { generateCentre } from '../../../fixtures/generator/index.js';
import { compileView, type CompiledView } from '../../../src/mapping/view/index.js';

const text = fc.constantFrom('a', 'b', 'official', 'final', 'Ana', 'x y', '', 'ÄÖ');
const system = fc.constantFrom(
  'http://loinc.org',
  'http://snomed.info/sct',
  'http://centre.example/local',
);
const code = fc.constantFrom('8302-2', '29463-7', '1234', 'Q');
const dateTime = fc.constantFrom(
  '2024',
  '2024-01',
  '2024-01-02',
  '2024-01-02T10:00:00Z',
  '2024-01-02T10:00:00.123+02:00',
);
const primitiveExtension = fc.constant({
  extension: [{ url: 'http://example.org/ext', valueString: 'e' }],
});

const coding = fc.record({ system, code, display: text }, { requiredKeys: [] });
const codeableConcept = fc.record(
  { coding: fc.array(coding, { maxLength: 3 }), text },
  { requiredKeys: [] },
);
const reference = fc.oneof(
  fc.record({
    reference: fc.constantFrom(
      'Patient/p1',
      'Patient/p2',
      'Group/g1',
      'Encounter/e1',
      'Medication/m2',
      'https://ehr.example/fhir/Patient/p3',
      'Patient/p1/_history/2',
      '#m1',
      'urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7',
      'Encounter/bad id',
    ),
  }),
  fc.record({ display: text }),
  fc.record({ identifier: fc.record({ system: fc.constant('urn:mrn'), value: text }) }),
);
const quantity = fc.record(
  {
    value: fc.oneof(
      fc.integer({ min: -5, max: 300 }),
      fc.double({ min: 0, max: 300, noNaN: true, noDefaultInfinity: true }),
    ),
    unit: text,
    system: fc.constant('http://unitsofmeasure.org'),
    code: fc.constantFrom('kg', 'cm', '[in_i]'),
  },
  { requiredKeys: [] },
);
const period = fc.record({ start: dateTime, end: dateTime }, { requiredKeys: [] });

/** One value[x] (usually), none, or occasionally two at once (invalid, but EHRs send it). */
const observationValue = fc.oneof(
  { weight: 1, arbitrary: fc.constant({}) },
  { weight: 4, arbitrary: quantity.map((valueQuantity) => ({ valueQuantity })) },
  { weight: 2, arbitrary: text.map((valueString) => ({ valueString })) },
  {
    weight: 2,
    arbitrary: codeableConcept.map((valueCodeableConcept) => ({ valueCodeableConcept })),
  },
  { weight: 1, arbitrary: fc.boolean().map((valueBoolean) => ({ valueBoolean })) },
  {
    weight: 1,
    arbitrary: fc.integer({ min: 0, max: 9 }).map((valueInteger) => ({ valueInteger })),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(quantity, text)
      .map(([valueQuantity, valueString]) => ({ valueQuantity, valueString })),
  },
  {
    weight: 1,
    arbitrary: text.map((valueString) => ({ valueString, _valueString: { id: 'v1' } })),
  },
);
const effective = fc.oneof(
  fc.constant({}),
  dateTime.map((effectiveDateTime) => ({ effectiveDateTime })),
  period.map((effectivePeriod) => ({ effectivePeriod })),
);

const observation = fc
  .tuple(
    fc.record(
      {
        resourceType: fc.constant('Observation'),
        id: fc.constantFrom('o1', 'o2'),
        status: fc.constantFrom('final', 'amended', 'preliminary', 'entered-in-error'),
        _status: primitiveExtension,
        code: codeableConcept,
        category: fc.array(codeableConcept, { maxLength: 2 }),
        subject: reference,
        encounter: reference,
        issued: fc.constantFrom('2024-01-02T10:00:00Z', '2024-01-02T10:00:00.5+01:00'),
        interpretation: fc.array(codeableConcept, { maxLength: 2 }),
        component: fc.array(
          fc.tuple(codeableConcept, observationValue).map(([c, v]) => ({ code: c, ...v })),
          { maxLength: 3 },
        ),
        extension: fc.array(
          fc.record({ url: fc.constantFrom('http://ext/a', 'http://ext/b'), valueString: text }),
          { maxLength: 2 },
        ),
      },
      { requiredKeys: ['resourceType', 'id', 'status', 'code'] },
    ),
    observationValue,
    effective,
  )
  .map(([base, value, when]) => ({ ...base, ...value, ...when }));

/** A name whose given names may carry extensions (`_given`), with nulls where only one exists. */
const humanName = fc
  .tuple(
    fc.record(
      { use: fc.constantFrom('official', 'usual', 'nickname'), family: text },
      { requiredKeys: [] },
    ),
    fc.array(fc.tuple(text, fc.boolean(), fc.boolean()), { maxLength: 3 }),
  )
  .map(([name, givens]) => {
    const result: Record<string, unknown> = { ...name };
    if (givens.length === 0) return result;
    const withExtension = givens.some(([, ext]) => ext);
    result.given = givens.map(([g, ext, dropValue]) => (ext && dropValue ? null : g));
    if (withExtension) {
      result._given = givens.map(([, ext]) =>
        ext ? { extension: [{ url: 'http://example.org/ext', valueString: 'e' }] } : null,
      );
    }
    return result;
  });
const contactPoint = fc.record(
  { system: fc.constantFrom('phone', 'email'), value: text, use: fc.constantFrom('home', 'work') },
  { requiredKeys: [] },
);
const patient = fc
  .tuple(
    fc.record(
      {
        resourceType: fc.constant('Patient'),
        id: fc.constantFrom('p1', 'p2'),
        name: fc.array(humanName, { maxLength: 3 }),
        gender: fc.constantFrom('female', 'male', 'other', 'unknown'),
        birthDate: fc.constantFrom('1990', '1990-04', '1990-04-02'),
        _birthDate: primitiveExtension,
        active: fc.boolean(),
        telecom: fc.array(contactPoint, { maxLength: 3 }),
        contact: fc.array(
          fc.record(
            { name: humanName, telecom: fc.array(contactPoint, { maxLength: 2 }) },
            { requiredKeys: [] },
          ),
          { maxLength: 2 },
        ),
        link: fc.array(fc.record({ other: reference, type: fc.constant('seealso') }), {
          maxLength: 2,
        }),
      },
      { requiredKeys: ['resourceType', 'id'] },
    ),
    fc.oneof(
      fc.constant({}),
      fc.boolean().map((deceasedBoolean) => ({ deceasedBoolean })),
      dateTime.map((deceasedDateTime) => ({ deceasedDateTime })),
    ),
  )
  .map(([base, deceased]) => ({ ...base, ...deceased }));

const medication = fc.record(
  {
    resourceType: fc.constant('Medication'),
    id: fc.constantFrom('m1', 'm3'),
    code: codeableConcept,
    form: codeableConcept,
  },
  { requiredKeys: ['resourceType', 'id'] },
);
const medicationRequest = fc
  .tuple(
    fc.record(
      {
        resourceType: fc.constant('MedicationRequest'),
        id: fc.constantFrom('mr1', 'mr2'),
        status: fc.constantFrom('active', 'completed', 'stopped', 'entered-in-error'),
        intent: fc.constantFrom('order', 'plan', 'proposal'),
        subject: reference,
        authoredOn: dateTime,
        contained: fc.array(
          fc.oneof(medication, fc.constant({ resourceType: 'Patient', id: 'cp' })),
          { maxLength: 2 },
        ),
        dosageInstruction: fc.array(
          fc.record(
            {
              text,
              route: codeableConcept,
              timing: fc.record({ repeat: fc.record({ boundsPeriod: period }) }),
            },
            { requiredKeys: [] },
          ),
          { maxLength: 2 },
        ),
        dispenseRequest: fc.record({ validityPeriod: period }),
      },
      { requiredKeys: ['resourceType', 'id', 'status', 'intent'] },
    ),
    fc.oneof(
      codeableConcept.map((medicationCodeableConcept) => ({ medicationCodeableConcept })),
      reference.map((medicationReference) => ({ medicationReference })),
    ),
  )
  .map(([base, med]) => ({ ...base, ...med }));

const observationView = {
  resource: 'Observation',
  where: [{ path: "status != 'entered-in-error'" }],
  select: [
    {
      column: [
        { name: 'id', path: 'getResourceKey()' },
        { name: 'status', path: 'status' },
        { name: 'status_prefixed', path: 'Observation.status' },
        { name: 'patient', path: 'subject.getReferenceKey(Patient)' },
        { name: 'subject', path: 'subject.getReferenceKey()' },
        { name: 'encounter', path: 'encounter.getReferenceKey(Encounter)' },
        { name: 'value', path: 'value.ofType(Quantity).value' },
        { name: 'unit', path: 'value.ofType(Quantity).code' },
        { name: 'vstring', path: 'value.ofType(string)' },
        { name: 'vbool', path: 'value.ofType(boolean)' },
        { name: 'vint', path: 'value.ofType(integer)' },
        { name: 'vcodes', path: 'value.ofType(CodeableConcept).coding.code', collection: true },
        { name: 'value_any', path: 'value', collection: true },
        { name: 'effective', path: 'effective.ofType(dateTime)' },
        { name: 'effective_start', path: 'effective.ofType(Period).start' },
        { name: 'issued', path: 'issued' },
        { name: 'loinc', path: "code.coding.where(system = 'http://loinc.org').code.first()" },
        {
          name: 'loinc_all',
          path: "code.coding.where(system = 'http://loinc.org' and code != '1234').code",
          collection: true,
        },
        { name: 'has_coding', path: 'code.coding.exists()' },
        { name: 'no_coding', path: 'code.coding.empty()' },
        { name: 'coding_count', path: 'code.coding.count()' },
        { name: 'first_display', path: 'code.coding[0].display' },
        { name: 'second_code', path: 'code.coding[1].code' },
        { name: 'last_code', path: 'code.coding.last().code' },
        { name: 'codes', path: "code.coding.code.join('|')" },
        { name: 'displays', path: 'code.coding.display.join()' },
        { name: 'text', path: 'code.text' },
        { name: 'final', path: "status = 'final'" },
        { name: 'not_final', path: "status != 'final'" },
        { name: 'final_or_amended', path: "status = 'final' or status = 'amended'" },
        { name: 'final_with_subject', path: "status = 'final' and subject.exists()" },
        { name: 'no_interpretation', path: 'interpretation.exists().not()' },
        { name: 'ext_a', path: "extension('http://ext/a').value.ofType(string)", collection: true },
        { name: 'categories', path: 'category.coding.code', collection: true },
        {
          name: 'has_height',
          path: "component.where(code.coding.exists(code = '8302-2')).exists()",
        },
        { name: 'literal', path: "'x'" },
        { name: 'row', path: '%rowIndex' },
      ],
    },
    {
      forEach: 'code.coding',
      column: [
        { name: 'c_system', path: 'system' },
        { name: 'c_code', path: 'code' },
        { name: 'c_display_upper', path: 'display.upper()' },
        { name: 'c_row', path: '%rowIndex' },
      ],
    },
    {
      forEachOrNull: 'component',
      column: [
        { name: 'comp_code', path: 'code.coding.code.first()' },
        { name: 'comp_value', path: 'value.ofType(Quantity).value' },
        { name: 'comp_string', path: 'value.ofType(string)' },
        { name: 'comp_row', path: '%rowIndex' },
      ],
    },
  ],
};

const observationUnionView = {
  resource: 'Observation',
  select: [
    { column: [{ name: 'id', path: 'id' }] },
    {
      unionAll: [
        {
          forEach: 'code.coding',
          column: [
            { name: 'code', path: 'code' },
            { name: 'src', path: "'code'" },
          ],
        },
        {
          forEach: 'category.coding',
          column: [
            { name: 'code', path: 'code' },
            { name: 'src', path: "'category'" },
          ],
        },
      ],
    },
  ],
};

const patientView = {
  resource: 'Patient',
  select: [
    {
      column: [
        { name: 'id', path: 'getResourceKey()' },
        { name: 'family', path: 'name.family.first()' },
        { name: 'official', path: "name.where(use = 'official').family", collection: true },
        { name: 'given', path: 'name.given', collection: true },
        { name: 'given_first', path: 'name.given.first()' },
        { name: 'given_second', path: 'name.given[1]' },
        { name: 'given_join', path: "name.given.join(' ')" },
        { name: 'has_given', path: 'name.given.exists()' },
        { name: 'birth', path: 'birthDate' },
        { name: 'has_birth', path: 'birthDate.exists()' },
        { name: 'gender', path: 'gender' },
        { name: 'female', path: "gender = 'female'" },
        { name: 'active', path: 'active' },
        { name: 'active_true', path: 'active = true' },
        { name: 'inactive', path: 'active.not()' },
        { name: 'deceased', path: 'deceased.ofType(boolean)' },
        { name: 'deceased_at', path: 'deceased.ofType(dateTime)' },
        { name: 'links', path: 'link.other.getReferenceKey(Patient)', collection: true },
        { name: 'phones', path: "telecom.where(system = 'phone').value", collection: true },
      ],
    },
    {
      forEach: 'name',
      column: [
        { name: 'n_use', path: 'use' },
        { name: 'n_family', path: 'family' },
        { name: 'n_given', path: "given.join(',')" },
        { name: 'n_given_first', path: 'given.first()' },
        { name: 'n_row', path: '%rowIndex' },
      ],
    },
    {
      unionAll: [
        {
          forEach: 'telecom',
          column: [
            { name: 't_value', path: 'value' },
            { name: 't_system', path: 'system' },
          ],
        },
        {
          forEach: 'contact.telecom',
          column: [
            { name: 't_value', path: 'value' },
            { name: 't_system', path: 'system' },
          ],
        },
      ],
    },
  ],
};

/** A forEach over primitives, which carry extensions in `_given`. */
const patientGivenView = {
  resource: 'Patient',
  select: [
    { column: [{ name: 'id', path: 'id' }] },
    {
      forEachOrNull: 'name.given',
      column: [
        { name: 'given', path: '$this' },
        { name: 'ext', path: "extension('http://example.org/ext').value.ofType(string)" },
        { name: 'has_ext', path: 'extension.exists()' },
        { name: 'row', path: '%rowIndex' },
      ],
    },
  ],
};

/** A forEach fhirpath.js evaluates, whose children take the fast path on its nodes. */
const patientSlowForEachView = {
  resource: 'Patient',
  select: [
    {
      forEachOrNull: "name.where(family.startsWith('a') or use = 'usual')",
      column: [
        { name: 'family', path: 'family' },
        { name: 'given', path: 'given.first()' },
        { name: 'given_all', path: 'given', collection: true },
        { name: 'row', path: '%rowIndex' },
      ],
    },
  ],
};

const medicationRequestView = {
  resource: 'MedicationRequest',
  where: [{ path: "status = 'active' or status = 'completed' or status = 'stopped'" }],
  select: [
    {
      column: [
        { name: 'id', path: 'getResourceKey()' },
        { name: 'status', path: 'status' },
        { name: 'intent', path: 'intent' },
        {
          name: 'med_codes',
          path: 'medication.ofType(CodeableConcept).coding.code',
          collection: true,
        },
        { name: 'med_ref', path: 'medication.ofType(Reference).getReferenceKey(Medication)' },
        { name: 'med_ref_text', path: 'medication.ofType(Reference).reference' },
        {
          name: 'contained_codes',
          path: 'contained.ofType(Medication).code.coding.code',
          collection: true,
        },
        { name: 'authored', path: 'authoredOn' },
        {
          name: 'bounds_start',
          path: 'dosageInstruction.timing.repeat.boundsPeriod.start.first()',
        },
        { name: 'validity_end', path: 'dispenseRequest.validityPeriod.end' },
        { name: 'routes', path: 'dosageInstruction.route.coding.code', collection: true },
      ],
    },
    {
      forEach: 'dosageInstruction',
      column: [
        { name: 'd_text', path: 'text' },
        { name: 'd_route', path: 'route.coding.code.first()' },
      ],
    },
    {
      forEachOrNull: 'contained.ofType(Medication)',
      column: [
        { name: 'm_id', path: 'id' },
        { name: 'm_form', path: 'form.coding.code.first()' },
      ],
    },
  ],
};

type Outcome = { rows: Record<string, unknown>[] } | { error: string; viewPath: unknown };

function outcome(view: CompiledView, resource: unknown): Outcome {
  try {
    return { rows: view.rows(resource) };
  } catch (error) {
    return {
      error: error instanceof Error ? error.name : String(error),
      viewPath: (error as { viewPath?: unknown }).viewPath,
    };
  }
}

function checkEquivalence(
  definition: unknown,
  resources: fc.Arbitrary<Record<string, unknown>>,
  slowExpressions: string[] = [],
  againstEngine = true,
) {
  const fast = compileView(definition);
  const runners = compileView(definition, { codegen: false });
  const slow = compileView(definition, { fastPath: false });
  expect(fast.generated).toBe(true);
  expect(runners.generated).toBe(false);
  expect(slow.generated).toBe(false);
  // The views are written so that every expression but the listed ones takes the fast path.
  expect(fast.expressions.filter((e) => !e.fastPath).map((e) => e.expression)).toEqual(
    slowExpressions,
  );
  let rowsSeen = 0;
  fc.assert(
    fc.property(resources, (resource) => {
      const viaEngine = outcome(slow, resource);
      const viaFastPath = outcome(fast, resource);
      const viaRunners = outcome(runners, resource);
      expect(viaFastPath, 'generated code vs select runners').toEqual(viaRunners);
      if (againstEngine) expect(viaRunners, 'fast closures vs fhirpath.js').toEqual(viaEngine);
      if ('rows' in viaFastPath) rowsSeen += viaFastPath.rows.length;
    }),
    { numRuns: 300 },
  );
  // Guard against a generator that only produces filtered-out resources.
  expect(rowsSeen).toBeGreaterThan(100);
}

/** Views that reach the generated code's rarer branches: first()/last()/count() on lists, repeat. */
const listFunctionsView = {
  resource: 'Observation',
  select: [
    {
      column: [
        { name: 'first_code', path: 'code.coding.first().code' },
        { name: 'last_system', path: 'code.coding.last().system' },
        { name: 'first_display', path: 'code.coding.display.first()' },
        { name: 'n', path: 'code.coding.count()' },
        { name: 'any', path: 'category.coding.exists()' },
        { name: 'none', path: 'interpretation.coding.empty()' },
        { name: 'codes', path: 'code.coding.code', collection: true },
        { name: 'texts', path: 'category.text', collection: true },
        { name: 'value', path: 'value', collection: true },
        { name: 'value_kinds', path: 'value.ofType(Quantity).value.count()' },
        { name: 'self_count', path: '$this.count()' },
        { name: 'one', path: '1', collection: true },
        { name: 'row', path: '%rowIndex' },
      ],
    },
    {
      forEach: 'component',
      column: [
        { name: 'c_row', path: '%rowIndex' },
        { name: 'c_first', path: 'code.coding.code.first()' },
        { name: 'c_key', path: 'getResourceKey()' },
      ],
      select: [
        {
          forEachOrNull: 'code.coding',
          column: [
            { name: 'cc_code', path: 'code' },
            { name: 'cc_row', path: '%rowIndex' },
          ],
        },
      ],
    },
  ],
};

const questionnaireResponseView = {
  resource: 'QuestionnaireResponse',
  select: [
    { column: [{ name: 'id', path: 'getResourceKey()' }] },
    {
      repeat: ['item'],
      column: [
        { name: 'link_id', path: 'linkId' },
        { name: 'answer', path: 'answer.value.ofType(string).first()' },
        { name: 'row', path: '%rowIndex' },
      ],
    },
  ],
};

const questionnaireItem: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  item: fc.record(
    {
      linkId: fc.constantFrom('1', '1.1', '2'),
      answer: fc.array(fc.record({ valueString: text }), { maxLength: 2 }),
      item: fc.array(tie('item'), { maxLength: 2 }),
    },
    { requiredKeys: ['linkId'] },
  ),
})).item;

const questionnaireResponse = fc.record({
  resourceType: fc.constant('QuestionnaireResponse'),
  id: fc.constantFrom('q1', 'q2'),
  item: fc.array(questionnaireItem, { maxLength: 3 }),
});

// Generator resources to start from, by type, and the pack's views.
const centreResources = new Map<string, Record<string, unknown>[]>();
for (const resource of generateCentre({ seed: 11, patients: 12 }).resources()) {
  const list = centreResources.get(resource.resourceType) ?? [];
  list.push(resource);
  centreResources.set(resource.resourceType, list);
}
const packViewsDir = new URL('../../../mappings/ibd/views/', import.meta.url);
const packViews = readdirSync(packViewsDir)
  .filter((file) => file.endsWith('.json'))
  .map((file) => ({
    file,
    definition: JSON.parse(readFileSync(new URL(file, packViewsDir), 'utf8')) as {
      resource: string;
    },
  }));

/** Changes of shape the generated code must hand over (or handle) exactly. */
const SHAPE_CHANGES = [
  (v: unknown) => [v],
  () => null,
  (v: unknown) => [v, v],
  (v: unknown) => [[v]],
  (v: unknown) => (Array.isArray(v) ? [...v, null] : [v, null]),
  () => [],
  () => undefined,
  () => ({}),
  (v: unknown) => (Array.isArray(v) ? [null, ...v] : [null]),
  // A primitive where the model has an object: fhirpath.js reads some of these (a number as
  // a Quantity) where the fast closures find nothing, so only generated code and runners are
  // compared once these are used.
  () => 'x',
  () => 5,
] as const;
const PRIMITIVE_CHANGES = 2;
/** Keys added next to others: primitive extensions and extra choice values. */
const EXTRA_KEYS = [
  '_status',
  '_code',
  '_system',
  '_text',
  '_versionId',
  '_valueString',
  '_valueQuantity',
  '_effectiveDateTime',
  'valueString',
  'valueCodeableConcept',
  'valueQuantity',
  'effectivePeriod',
  'effectiveInstant',
  'medicationCodeableConcept',
  'medicationReference',
  'onsetDateTime',
  'reference',
] as const;
const EXTRA_VALUES = [
  { extension: [{ url: 'http://example.org/ext', valueString: 'e' }] },
  'x',
  { coding: [{ system: 'http://loinc.org', code: '8302-2' }], text: 't' },
  { value: 3, unit: 'kg', code: 'kg' },
  { start: '2024-01-02', end: '2024-02-03' },
  { reference: 'Medication/m1' },
  null,
  ['a', 'b'],
];

/** Every (holder, key) of a JSON tree below the root's resourceType. */
function slotsOf(value: unknown, out: [Record<string, unknown> | unknown[], string | number][]) {
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      out.push([value, i]);
      slotsOf(item, out);
    });
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      if (key === 'resourceType') continue;
      out.push([value as Record<string, unknown>, key]);
      slotsOf(item, out);
    }
  }
  return out;
}

/** A generator resource of `type` with up to three random changes of shape. */
function changedResources(
  type: string,
  withPrimitives: boolean,
): fc.Arbitrary<Record<string, unknown>> {
  const base = centreResources.get(type) ?? [];
  const change = fc.tuple(
    fc.nat(),
    fc.boolean(),
    fc.nat({ max: SHAPE_CHANGES.length - 1 - (withPrimitives ? 0 : PRIMITIVE_CHANGES) }),
    fc.nat({ max: EXTRA_KEYS.length - 1 }),
    fc.nat({ max: EXTRA_VALUES.length - 1 }),
  );
  return fc
    .tuple(fc.constantFrom(...base), fc.array(change, { maxLength: 3 }))
    .map(([resource, changes]) => {
      const copy = structuredClone(resource);
      for (const [where, addKey, shape, extraKey, extraValue] of changes) {
        const slots = slotsOf(copy, []);
        const [holder, key] = slots[where % slots.length] as (typeof slots)[number];
        if (addKey && !Array.isArray(holder)) {
          const name = EXTRA_KEYS[extraKey] as string;
          // `_x` holds a primitive's id and extensions, as in FHIR JSON.
          holder[name] = structuredClone(EXTRA_VALUES[name.startsWith('_') ? 0 : extraValue]);
          continue;
        }
        const changed = (SHAPE_CHANGES[shape] as (v: unknown) => unknown)(
          (holder as Record<string | number, unknown>)[key],
        );
        (holder as Record<string | number, unknown>)[key] = changed;
      }
      return copy;
    });
}

describe('fast path equals fhirpath.js', () => {
  it('when random Observations run through a wide view, then rows are identical', () => {
    checkEquivalence(observationView, observation, ['display.upper()']);
  });

  it('when random Observations run through a unionAll view, then rows are identical', () => {
    checkEquivalence(observationUnionView, observation);
  });

  it('when random Patients (with primitive extensions) run through a view, then rows are identical', () => {
    checkEquivalence(patientView, patient);
  });

  it('when a forEach iterates primitives that may carry extensions, then rows are identical', () => {
    checkEquivalence(patientGivenView, patient);
  });

  it('when a forEach runs in fhirpath.js and its columns on the fast path, then rows are identical', () => {
    checkEquivalence(patientSlowForEachView, patient, [
      "name.where(family.startsWith('a') or use = 'usual')",
    ]);
  });

  it('when random MedicationRequests with contained Medications run through a view, then rows are identical', () => {
    checkEquivalence(medicationRequestView, medicationRequest);
  });

  it('when list functions and nested forEachOrNull run on random Observations, then rows are identical', () => {
    checkEquivalence(listFunctionsView, observation);
  });

  it('when a repeat runs on random QuestionnaireResponses, then rows are identical', () => {
    checkEquivalence(questionnaireResponseView, questionnaireResponse, ['item']);
  });

  for (const { file, definition } of packViews) {
    it(`when generator resources with random shape changes run through the pack view ${file}, then rows are identical`, () => {
      checkEquivalence(definition, changedResources(definition.resource, false));
    });

    it(`when pack view ${file} meets primitives where objects belong, then generated code gives what the runners give`, () => {
      checkEquivalence(definition, changedResources(definition.resource, true), [], false);
    });
  }
});
