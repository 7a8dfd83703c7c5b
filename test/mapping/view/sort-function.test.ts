// sort() (FHIRPath 3.0, supported by fhirpath.js) has its own grammar rule: its parse node
// carries the name as text and SortDirectionArgument children, no Identifier. The analyser
// read the name from the Identifier, so every view using sort() was refused as "unknown
// FHIRPath function '()'". It compiles now, in every mode, with the same rows.
import { describe, expect, it } from 'vitest';
import { compileView } from '../../../src/mapping/view/index.js';

const MODES = [{}, { codegen: false }, { fastPath: false }] as const;

const patient = {
  resourceType: 'Patient',
  id: 'p1',
  name: [
    { family: 'Young', given: ['Cy', 'Al'] },
    { family: 'Adams', given: ['Bea'] },
  ],
};

function view(path: string) {
  return {
    resourceType: 'ViewDefinition',
    resource: 'Patient',
    status: 'active',
    select: [{ column: [{ name: 'x', path, collection: true }] }],
  };
}

describe('sort()', () => {
  it.each([
    ['name.given.sort()', ['Al', 'Bea', 'Cy']],
    ['name.given.sort($this)', ['Al', 'Bea', 'Cy']],
    ['name.given.sort($this desc)', ['Cy', 'Bea', 'Al']],
    ['name.sort(family).family', ['Adams', 'Young']],
    ['name.given.sort(length() desc, $this)', ['Bea', 'Al', 'Cy']],
  ])('when a column path is %s, then it compiles and every mode gives %j', (path, expected) => {
    for (const options of MODES)
      expect(compileView(view(path), options).rows(patient)).toEqual([{ x: expected }]);
  });

  it('when sort() is given an unknown function, then the error names that function', () => {
    expect(() => compileView(view('name.given.sort(nosuch())'))).toThrow(
      /select\[0\]\.column\[0\]\.path: unknown FHIRPath function 'nosuch\(\)'/,
    );
  });
});
