// Property: for random Observation, Patient and MedicationRequest resources (including odd
// shapes: primitive extensions, nulls in arrays, two choice values at once, unusual
// references, contained resources), every view gives exactly the same rows, or the same
// error, with the fast path as with fhirpath.js alone.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
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
) {
  const fast = compileView(definition);
  const slow = compileView(definition, { fastPath: false });
  // The views are written so that every expression but the listed ones takes the fast path.
  expect(fast.expressions.filter((e) => !e.fastPath).map((e) => e.expression)).toEqual(
    slowExpressions,
  );
  let rowsSeen = 0;
  fc.assert(
    fc.property(resources, (resource) => {
      const viaFastPath = outcome(fast, resource);
      const viaEngine = outcome(slow, resource);
      expect(viaFastPath).toEqual(viaEngine);
      if ('rows' in viaFastPath) rowsSeen += viaFastPath.rows.length;
    }),
    { numRuns: 300 },
  );
  // Guard against a generator that only produces filtered-out resources.
  expect(rowsSeen).toBeGreaterThan(100);
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
});
