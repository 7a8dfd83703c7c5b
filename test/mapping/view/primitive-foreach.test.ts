// forEach over primitive values (numbers in particular) followed by expressions that run in
// fhirpath.js: the generated code, the select runners and the engine-only mode give the same
// rows, with the values typed as the FHIR model says.
import { describe, expect, it } from 'vitest';
import { compileView } from '../../../src/mapping/view/index.js';

const MODES = [{}, { codegen: false }, { fastPath: false }] as const;

function rowsInEveryMode(definition: unknown, resource: Record<string, unknown>) {
  return MODES.map((options) => compileView(definition, options).rows(resource));
}

const observation = {
  resourceType: 'Observation',
  id: 'o1',
  status: 'final',
  code: { text: 'x' },
  component: [
    { code: { text: 'a' }, valueQuantity: { value: 1.26 } },
    { code: { text: 'b' }, valueQuantity: { value: 4 } },
    { code: { text: 'c' }, valueInteger: 7 },
  ],
};
const patient = {
  resourceType: 'Patient',
  id: 'p1',
  multipleBirthInteger: 2,
  name: [{ family: 'Smith', given: ['Ann', 'Bo'] }],
};

describe('forEach over primitive values', () => {
  it.each([
    ['component.value.ofType(Quantity).value', 'round(1)', [1.3, 4]],
    ['component.value.ofType(Quantity).value', 'toString()', ['1.26', '4']],
    ['component.value.ofType(Quantity).value', '$this is decimal', [true, true]],
    ['component.value.ofType(Quantity).value', '$this.type().name', ['decimal', 'decimal']],
    ['component.value.ofType(integer)', '$this + 1', [8]],
    ['component.value.ofType(integer)', '$this is integer', [true]],
    ['component.count()', '$this + 1', [4]],
    ['component.count()', '$this is System.Integer', [true]],
  ])(
    'when forEach is %s and the column %s, then every mode gives the same rows',
    (forEach, path, values) => {
      const definition = {
        resource: 'Observation',
        select: [{ forEach, column: [{ name: 'g', path }] }],
      };
      for (const rows of rowsInEveryMode(definition, observation)) {
        expect(rows).toEqual(values.map((g) => ({ g })));
      }
    },
  );

  it('when forEach is a count and the column $this, then every mode gives the number', () => {
    const definition = {
      resource: 'Patient',
      select: [
        { forEach: 'name.given.count()', column: [{ name: 'f', path: '$this' }] },
        { forEach: 'multipleBirth.ofType(integer)', column: [{ name: 'g', path: '$this + 1' }] },
      ],
    };
    for (const rows of rowsInEveryMode(definition, patient)) expect(rows).toEqual([{ f: 2, g: 3 }]);
  });

  it('when forEach gives integers and a column uses toString() and %rowIndex, then rows follow', () => {
    const definition = {
      resource: 'ExplanationOfBenefit',
      select: [
        {
          forEach: 'item.noteNumber',
          column: [
            { name: 'n', path: '$this' },
            { name: 's', path: "'note-' + toString()" },
            { name: 'ri', path: '%rowIndex' },
          ],
        },
      ],
    };
    const eob = {
      resourceType: 'ExplanationOfBenefit',
      id: 'e1',
      item: [{ sequence: 1, noteNumber: [1, 2] }],
    };
    for (const rows of rowsInEveryMode(definition, eob)) {
      expect(rows).toEqual([
        { n: 1, s: 'note-1', ri: 0 },
        { n: 2, s: 'note-2', ri: 1 },
      ]);
    }
  });
});
