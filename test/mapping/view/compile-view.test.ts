// Unit tests of the ViewDefinition engine beyond the conformance suite: validation messages,
// which expressions take the fast path, reference keys, constants, runtime errors.
import { describe, expect, it } from 'vitest';
import {
  compileView,
  ViewDefinitionError,
  ViewEvaluationError,
  type CompiledView,
} from '../../../src/mapping/view/index.js';

function compileError(definition: unknown): ViewDefinitionError {
  try {
    compileView(definition, { source: 'mappings/test/views/example.json' });
  } catch (error) {
    if (error instanceof ViewDefinitionError) return error;
    throw error;
  }
  throw new Error('expected compileView to throw');
}

function patientView(column: Record<string, unknown>[], extra: Record<string, unknown> = {}) {
  return { resourceType: 'ViewDefinition', resource: 'Patient', select: [{ column }], ...extra };
}

const patient = {
  resourceType: 'Patient',
  id: 'p1',
  active: true,
  gender: 'female',
  birthDate: '1990-04-02',
  name: [
    { use: 'official', family: 'Rivera', given: ['Ana', 'Maria'] },
    { use: 'nickname', given: ['Annie'] },
  ],
  link: [{ other: { reference: 'Patient/p2' }, type: 'seealso' }],
};

describe('compileView validation', () => {
  it('when the resource type is misspelt, then the error names resource and the bad value', () => {
    const error = compileError({
      resource: 'Patinet',
      select: [{ column: [{ name: 'id', path: 'id' }] }],
    });
    expect(error.viewPath).toBe('resource');
    expect(error.problem).toContain("'Patinet' is not a FHIR R4 resource type");
    expect(error.message).toContain('mappings/test/views/example.json');
  });

  it('when a property is misspelt, then the error suggests the right one', () => {
    const error = compileError({
      resource: 'Patient',
      select: [{ foreach: 'name', column: [{ name: 'family', path: 'family' }] }],
    });
    expect(error.viewPath).toBe('select[0].foreach');
    expect(error.problem).toBe("unknown property 'foreach' (did you mean 'forEach'?)");
  });

  it('when two columns share a name, then the second is reported with where the first is', () => {
    const error = compileError(
      patientView([
        { name: 'id', path: 'id' },
        { name: 'id', path: 'gender' },
      ]),
    );
    expect(error.viewPath).toBe('select[0].column[1].name');
    expect(error.problem).toBe("column 'id' is already defined at select[0].column[0]");
  });

  it('when a nested select repeats a parent column name, then it is rejected', () => {
    const error = compileError({
      resource: 'Patient',
      select: [
        {
          column: [{ name: 'id', path: 'id' }],
          select: [{ forEach: 'name', column: [{ name: 'id', path: 'family' }] }],
        },
      ],
    });
    expect(error.viewPath).toBe('select[0].select[0].column[0].name');
  });

  it('when unionAll branches differ in columns, then the branch and both column lists are named', () => {
    const error = compileError({
      resource: 'Patient',
      select: [
        {
          unionAll: [
            {
              column: [
                { name: 'a', path: 'id' },
                { name: 'b', path: 'id' },
              ],
            },
            {
              column: [
                { name: 'b', path: 'id' },
                { name: 'a', path: 'id' },
              ],
            },
          ],
        },
      ],
    });
    expect(error.viewPath).toBe('select[0].unionAll[1]');
    expect(error.problem).toContain('unionAll[0] has (a, b), this branch has (b, a)');
  });

  it('when unionAll branches declare different types for a column, then it is rejected', () => {
    const error = compileError({
      resource: 'Patient',
      select: [
        {
          unionAll: [
            { column: [{ name: 'v', path: 'id', type: 'id' }] },
            { column: [{ name: 'v', path: 'active', type: 'boolean' }] },
          ],
        },
      ],
    });
    expect(error.problem).toBe("column 'v' has type boolean here but id in unionAll[0]");
  });

  it('when several things are wrong, then every problem is listed at once', () => {
    const error = compileError(
      patientView([
        { name: 'a', path: 'nmae.family' },
        { name: 'b', path: 'name.foo()' },
        { name: 'c', path: 'name.where(' },
        { name: 'd-e', path: 'id', collection: 'yes' },
      ]),
    );
    const messages = error.issues.map((i) => `${i.path}: ${i.message}`);
    expect(messages).toEqual([
      'select[0].column[3].name: must be letters, digits and _ starting with a letter (a database column name)',
      'select[0].column[3].collection: must be true or false',
    ]);
    const fhirPathError = compileError(
      patientView([
        { name: 'a', path: 'nmae.family' },
        { name: 'b', path: 'name.foo()' },
        { name: 'c', path: 'name.where(' },
      ]),
    );
    expect(fhirPathError.issues.map((i) => i.path)).toEqual([
      'select[0].column[0].path',
      'select[0].column[1].path',
      'select[0].column[2].path',
    ]);
    expect(fhirPathError.issues[0]?.message).toBe("'nmae' is not an element of Patient");
    expect(fhirPathError.issues[1]?.message).toBe("unknown FHIRPath function 'foo()'");
    expect(fhirPathError.issues[2]?.message).toContain("invalid FHIRPath 'name.where('");
    expect(fhirPathError.message).toContain('3 problems');
  });

  it('when an element is misspelt inside a forEach, then it is checked against the forEach type', () => {
    const error = compileError({
      resource: 'Observation',
      select: [{ forEach: 'component', column: [{ name: 'v', path: 'valu.ofType(Quantity)' }] }],
    });
    expect(error.viewPath).toBe('select[0].column[0].path');
    expect(error.problem).toBe("'valu' is not an element of Observation.component");
  });

  it('when a where path can only be a string, then it is rejected at compile time', () => {
    const error = compileError(
      patientView([{ name: 'id', path: 'id' }], { where: [{ path: 'name.family' }] }),
    );
    expect(error.viewPath).toBe('where[0].path');
    expect(error.problem).toBe("a where path must give a boolean, but 'name.family' gives string");
  });

  it('when getReferenceKey is used on a non-Reference or with a bad type, then it is rejected', () => {
    const error = compileError({
      resource: 'Observation',
      select: [
        {
          column: [
            { name: 'a', path: 'code.getReferenceKey()' },
            { name: 'b', path: 'subject.getReferenceKey(Pateint)' },
            { name: 'c', path: 'value.ofType(Quantiti)' },
          ],
        },
      ],
    });
    expect(error.issues.map((i) => i.message)).toEqual([
      'getReferenceKey() applies to Reference elements, not CodeableConcept',
      "getReferenceKey(Pateint): 'Pateint' is not a FHIR resource type",
      "unknown type 'Quantiti' in ofType()",
    ]);
  });

  it('when a constant is undefined, lacks a value or has the wrong type, then each is reported', () => {
    const undefinedConstant = compileError(
      patientView([{ name: 'f', path: 'name.where(use = %nameUse).family.first()' }]),
    );
    expect(undefinedConstant.problem).toBe(
      '%nameUse is not a constant of this view (define it under constant)',
    );
    const noValue = compileError(
      patientView([{ name: 'id', path: 'id' }], { constant: [{ name: 'nameUse' }] }),
    );
    expect(noValue.viewPath).toBe('constant[0]');
    expect(noValue.problem).toContain("constant 'nameUse' has no value[x]");
    const wrongType = compileError(
      patientView([{ name: 'id', path: 'id' }], {
        constant: [
          { name: 'n', valueInteger: '1.5' },
          { name: 'd', valueDate: '02/04/1990' },
          { name: 'rowIndex', valueString: 'x' },
        ],
      }),
    );
    expect(wrongType.issues).toEqual([
      { path: 'constant[0].valueInteger', message: 'valueInteger must be an integer' },
      {
        path: 'constant[1].valueDate',
        message: 'valueDate must be a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)',
      },
      { path: 'constant[2].name', message: "'rowIndex' is reserved by FHIRPath" },
    ]);
  });

  it('when the definition is not an object or lacks select, then the error says so', () => {
    expect(compileError('Patient').problem).toBe('a ViewDefinition must be a JSON object');
    expect(compileError({ resource: 'Patient' }).issues).toEqual([
      { path: 'select', message: 'is required (at least one selection structure)' },
    ]);
  });
});

describe('compileView rows', () => {
  it('when a view has nested selects and a union, then columns come in the spec order', () => {
    const view = compileView({
      resource: 'Patient',
      select: [
        {
          column: [{ name: 'a', path: "'A'" }],
          select: [{ column: [{ name: 'b', path: "'B'" }] }],
          unionAll: [
            { column: [{ name: 'c', path: "'C1'" }] },
            { column: [{ name: 'c', path: "'C2'" }] },
          ],
        },
        { column: [{ name: 'd', path: "'D'", type: 'string' }] },
      ],
    });
    expect(view.columns).toEqual([
      { name: 'a' },
      { name: 'b' },
      { name: 'c' },
      { name: 'd', type: 'string' },
    ]);
    expect(view.rows(patient)).toEqual([
      { a: 'A', b: 'B', c: 'C1', d: 'D' },
      { a: 'A', b: 'B', c: 'C2', d: 'D' },
    ]);
    expect(Object.keys(view.rows(patient)[0] ?? {})).toEqual(['a', 'b', 'c', 'd']);
  });

  it('when a resource of another type is given, then the view gives no rows', () => {
    const view = compileView(patientView([{ name: 'id', path: 'id' }]));
    expect(view.rows({ resourceType: 'Observation', id: 'o1' })).toEqual([]);
    expect(view.rows(null)).toEqual([]);
  });

  it('when a column gets several values without collection, then the error names the column but no data', () => {
    const view = compileView(patientView([{ name: 'given', path: 'name.given' }]), {
      source: 'views/patient.json',
    });
    let error: unknown;
    try {
      view.rows(patient);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ViewEvaluationError);
    const evaluation = error as ViewEvaluationError;
    expect(evaluation.viewPath).toBe('select[0].column[0].path');
    expect(evaluation.resourceType).toBe('Patient');
    expect(evaluation.message).toContain("column 'given' got 3 values");
    expect(evaluation.message).toContain('views/patient.json');
    expect(evaluation.message).not.toMatch(/Ana|Maria|Annie|p1/);
  });

  it('when fhirpath.js fails on the data, then the error is redacted of resource values', () => {
    const view = compileView(patientView([{ name: 'x', path: 'name.given and true' }]));
    expect(() => view.rows(patient)).toThrow(ViewEvaluationError);
    try {
      view.rows(patient);
    } catch (error) {
      expect((error as Error).message).not.toMatch(/Ana|Maria|Annie/);
    }
  });

  it('when a where path gives a string at run time, then rows() throws', () => {
    const view = compileView(
      patientView([{ name: 'id', path: 'id' }], { where: [{ path: 'name.given.select($this)' }] }),
    );
    expect(() => view.rows({ resourceType: 'Patient', name: [{ given: ['Ana'] }] })).toThrow(
      'where gave a string instead of a boolean',
    );
  });

  it('when collection is true, then values are arrays, empty ones included', () => {
    const view = compileView(
      patientView([
        { name: 'given', path: 'name.given', collection: true },
        { name: 'prefix', path: 'name.prefix', collection: true },
        { name: 'family', path: 'name.family', collection: true },
      ]),
    );
    expect(view.rows(patient)).toEqual([
      { given: ['Ana', 'Maria', 'Annie'], prefix: [], family: ['Rivera'] },
    ]);
  });

  it('when forEachOrNull finds nothing, then one row has nulls and %rowIndex 0', () => {
    const view = compileView({
      resource: 'Patient',
      select: [
        { column: [{ name: 'id', path: 'getResourceKey()' }] },
        {
          forEachOrNull: 'address',
          column: [
            { name: 'i', path: '%rowIndex' },
            { name: 'city', path: 'city' },
          ],
        },
      ],
    });
    expect(view.rows(patient)).toEqual([{ id: 'p1', i: 0, city: null }]);
  });

  it('when repeat walks nested items, then rows come depth first with a running %rowIndex', () => {
    const view = compileView({
      resource: 'QuestionnaireResponse',
      select: [
        {
          repeat: ['item', 'answer.item'],
          column: [
            { name: 'link', path: 'linkId' },
            { name: 'i', path: '%rowIndex' },
          ],
        },
      ],
    });
    const rows = view.rows({
      resourceType: 'QuestionnaireResponse',
      status: 'completed',
      item: [
        { linkId: 'a', item: [{ linkId: 'a.1' }], answer: [{ item: [{ linkId: 'a.x' }] }] },
        { linkId: 'b' },
      ],
    });
    expect(rows).toEqual([
      { link: 'a', i: 0 },
      { link: 'a.1', i: 1 },
      { link: 'a.x', i: 2 },
      { link: 'b', i: 3 },
    ]);
  });
});

describe('reference keys', () => {
  const view = compileView({
    resource: 'Observation',
    select: [
      {
        column: [
          { name: 'id', path: 'getResourceKey()' },
          { name: 'any', path: 'subject.getReferenceKey()' },
          { name: 'patient', path: 'subject.getReferenceKey(Patient)' },
          { name: 'group', path: "subject.getReferenceKey('Group')" },
        ],
      },
    ],
  });
  const rowFor = (reference: unknown) =>
    view.rows({ resourceType: 'Observation', id: 'o1', status: 'final', subject: reference })[0];

  it('when the subject is a relative Patient reference, then only untyped and Patient keys are set', () => {
    expect(rowFor({ reference: 'Patient/123' })).toEqual({
      id: 'o1',
      any: '123',
      patient: '123',
      group: null,
    });
  });

  it('when the subject is a Group, then the Patient-typed key is null', () => {
    expect(rowFor({ reference: 'Group/g7' })).toEqual({
      id: 'o1',
      any: 'g7',
      patient: null,
      group: 'g7',
    });
  });

  it('when the reference is absolute or versioned, then the key is the logical id', () => {
    expect(rowFor({ reference: 'https://ehr.example/fhir/Patient/123' })?.patient).toBe('123');
    expect(rowFor({ reference: 'Patient/123/_history/4' })?.patient).toBe('123');
  });

  it('when the reference is contained, a urn, identifier-only or malformed, then there is no key', () => {
    for (const reference of [
      { reference: '#med1' },
      { reference: 'urn:uuid:5f0c2f3e-8a39-4b1e-9a39-0f3c2c1a2b3c' },
      { identifier: { system: 'urn:mrn', value: '42' } },
      { reference: 'Patient/has spaces' },
      { reference: 'Unknownthing/1' },
    ]) {
      expect(rowFor(reference)).toEqual({ id: 'o1', any: null, patient: null, group: null });
    }
  });

  it('when the fast path is off, then the keys are the same', () => {
    const slow = compileView(
      {
        resource: 'Observation',
        select: [{ column: [{ name: 'patient', path: 'subject.getReferenceKey(Patient)' }] }],
      },
      { fastPath: false },
    );
    expect(slow.expressions[0]?.fastPath).toBe(false);
    const observation = {
      resourceType: 'Observation',
      subject: { reference: 'Patient/123/_history/4' },
    };
    expect(slow.rows(observation)).toEqual([{ patient: '123' }]);
  });
});

describe('constants', () => {
  it('when constants of each type are used in paths, then they act as literals', () => {
    const view: CompiledView = compileView({
      resource: 'Patient',
      constant: [
        { name: 'use', valueCode: 'official' },
        { name: 'born', valueDate: '1990-04-02' },
        { name: 'second', valueInteger: 1 },
        { name: 'isActive', valueBoolean: true },
        { name: 'quote', valueString: "O'Brien" },
      ],
      select: [
        {
          column: [
            { name: 'official', path: 'name.where(use = %use).family' },
            { name: 'born_match', path: 'birthDate = %born' },
            { name: 'second_given', path: 'name.given[%second]' },
            { name: 'active_match', path: 'active = %isActive' },
            { name: 'quoted', path: '%quote' },
          ],
        },
      ],
    });
    expect(view.rows(patient)).toEqual([
      {
        official: 'Rivera',
        born_match: true,
        second_given: 'Maria',
        active_match: true,
        quoted: "O'Brien",
      },
    ]);
  });

  it('when a constant is used in forEach and where, then it filters there too', () => {
    const view = compileView({
      resource: 'Patient',
      constant: [{ name: 'nick', valueString: 'nickname' }],
      where: [{ path: 'name.where(use = %nick).exists()' }],
      select: [
        { forEach: 'name.where(use = %nick)', column: [{ name: 'given', path: 'given.first()' }] },
      ],
    });
    expect(view.rows(patient)).toEqual([{ given: 'Annie' }]);
    expect(view.rows({ ...patient, name: [{ use: 'official', given: ['X'] }] })).toEqual([]);
  });

  it('when a constant name appears inside a string literal, then it is left alone', () => {
    const view = compileView(
      patientView([{ name: 'text', path: "'%use stays'" }], {
        constant: [{ name: 'use', valueCode: 'x' }],
      }),
    );
    expect(view.rows(patient)).toEqual([{ text: '%use stays' }]);
  });
});

describe('fast path selection', () => {
  it('when expressions are simple paths, then they use the fast path; others use fhirpath.js with a reason', () => {
    const view = compileView({
      resource: 'Observation',
      select: [
        {
          column: [
            { name: 'value', path: 'value.ofType(Quantity).value' },
            { name: 'loinc', path: "code.coding.where(system = 'http://loinc.org').code.first()" },
            { name: 'has_code', path: 'code.coding.exists()' },
            { name: 'codes', path: "code.coding.code.join('|')" },
            { name: 'first_code', path: 'code.coding[0].code' },
            { name: 'patient', path: 'subject.getReferenceKey(Patient)' },
            { name: 'final', path: "status = 'final' or status = 'amended'" },
            { name: 'upper', path: 'status.upper()' },
            { name: 'when', path: 'effective.ofType(dateTime) > @2020-01-01' },
          ],
        },
      ],
    });
    const plan = Object.fromEntries(view.expressions.map((e) => [e.viewPath, e]));
    for (const i of [0, 1, 2, 3, 4, 5, 6]) {
      expect(plan[`select[0].column[${i}].path`]?.fastPath).toBe(true);
    }
    expect(plan['select[0].column[7].path']).toMatchObject({
      fastPath: false,
      reason: 'upper() is evaluated by fhirpath.js',
    });
    expect(plan['select[0].column[8].path']?.fastPath).toBe(false);
  });

  it('when fastPath is false, then no expression uses the fast path and rows are unchanged', () => {
    const definition = patientView(
      [
        { name: 'family', path: 'name.where(use = %u).family.first()' },
        { name: 'given', path: "name.given.join(' ')" },
      ],
      { constant: [{ name: 'u', valueCode: 'official' }] },
    );
    const fast = compileView(definition);
    const slow = compileView(definition, { fastPath: false });
    expect(fast.expressions.every((e) => e.fastPath)).toBe(true);
    expect(slow.expressions.some((e) => e.fastPath)).toBe(false);
    expect(fast.rows(patient)).toEqual(slow.rows(patient));
    expect(fast.rows(patient)).toEqual([{ family: 'Rivera', given: 'Ana Maria Annie' }]);
  });

  it('when a primitive carries an extension, then the fast path defers to fhirpath.js and agrees with it', () => {
    const withExtension = {
      ...patient,
      name: [
        {
          given: ['Ana', null, 'Maria'],
          _given: [null, { extension: [{ url: 'x', valueString: 'y' }] }, null],
        },
      ],
    };
    const definition = patientView([
      { name: 'first', path: 'name.given.first()' },
      { name: 'second', path: 'name.given[1]' },
      { name: 'all', path: 'name.given', collection: true },
      { name: 'some', path: 'name.given.exists()' },
    ]);
    const fast = compileView(definition).rows(withExtension);
    const slow = compileView(definition, { fastPath: false }).rows(withExtension);
    expect(fast).toEqual(slow);
    expect(fast).toEqual([{ first: 'Ana', second: null, all: ['Ana', 'Maria'], some: true }]);
  });

  it('when arrays are nested in arrays (not FHIR JSON), then the fast path agrees with fhirpath.js', () => {
    const nested = {
      ...patient,
      birthDate: [['2012-03-06']],
      name: [[{ family: 'Ng', given: ['Ana'] }], [{ family: 'Li' }]],
    };
    const definition = {
      resource: 'Patient',
      select: [
        {
          column: [
            { name: 'birth', path: 'birthDate', collection: true },
            { name: 'family', path: 'name.family', collection: true },
          ],
        },
        { forEachOrNull: 'name', column: [{ name: 'given', path: 'given.first()' }] },
      ],
    };
    const fast = compileView(definition);
    expect(fast.expressions.every((e) => e.fastPath)).toBe(true);
    expect(fast.rows(nested)).toEqual(compileView(definition, { fastPath: false }).rows(nested));
  });

  it('when a fast forEach defers to fhirpath.js, then its columns still match fhirpath.js', () => {
    const withExtension = {
      ...patient,
      name: [
        {
          given: ['Ana', 'Maria'],
          _given: [{ extension: [{ url: 'x', valueString: 'y' }] }, null],
        },
      ],
    };
    const definition = {
      resource: 'Patient',
      select: [
        {
          forEach: 'name.given',
          column: [
            { name: 'given', path: '$this' },
            { name: 'i', path: '%rowIndex' },
            { name: 'ext', path: "extension('x').value.ofType(string)" },
          ],
        },
      ],
    };
    const fast = compileView(definition);
    expect(fast.expressions.every((e) => e.fastPath)).toBe(true);
    const rows = fast.rows(withExtension);
    expect(rows).toEqual(compileView(definition, { fastPath: false }).rows(withExtension));
    expect(rows).toEqual([
      { given: 'Ana', i: 0, ext: 'y' },
      { given: 'Maria', i: 1, ext: null },
    ]);
  });
});
