// ViewEvaluationError messages from fhirpath.js failures: whatever the library's message says,
// the error carries only the view path, the expression, the resource type and a fixed
// description, never resource content (names, MRNs, dates, addresses).
import { describe, expect, it } from 'vitest';
import { describeEngineFailure } from '../../../src/mapping/view/errors.js';
import { compileView, ViewEvaluationError } from '../../../src/mapping/view/index.js';

const SECRETS = ['Annabel', 'Smithers', 'MRN-77341', '1970-05-06', '12 Elm', 'Jane Roe', '5551234'];

const patient = {
  resourceType: 'Patient',
  id: 'p1',
  birthDate: '1970-05-06',
  identifier: [{ system: 'urn:mrn', value: 'MRN-77341' }],
  name: [{ family: 'Smithers', given: ['Annabel', 'Zed'] }],
  telecom: [{ value: '5551234' }],
  multipleBirthInteger: 42,
  address: [{ line: ['12 Elm'], postalCode: '90210' }],
};

function evaluationError(path: string, resource: Record<string, unknown> = patient) {
  const view = compileView(
    { resource: resource.resourceType, name: 'v', select: [{ column: [{ name: 'a', path }] }] },
    { source: 'views/v.json' },
  );
  try {
    view.rows(resource);
  } catch (error) {
    if (error instanceof ViewEvaluationError) return error;
    throw error;
  }
  throw new Error(`expected rows() to throw for ${path}`);
}

describe('fhirpath.js failures in ViewEvaluationError', () => {
  it.each([
    ['multipleBirth.ofType(integer) - name.family', 'a value is not a number'],
    ['name.family - multipleBirth.ofType(integer)', 'a value is not a number'],
    ['address.postalCode.toInteger() + address.line', 'a value is not a number'],
    ['multipleBirth.ofType(integer) + birthDate', 'a value is not a number'],
    ['identifier.value * 2', 'a value is not a number'],
    ['telecom.value.toInteger() / name', 'a value is not a number'],
    ['name.given + 1', 'the operands of an arithmetic operator have incompatible types'],
    ['name.given * 2', 'the operands of an arithmetic operator have incompatible types'],
    ['name.given contains name.given', 'several values where one was expected (operator operand)'],
    ['name.family.substring(name.given.first())', 'a function argument has the wrong type'],
    ['birthDate - 1', 'date/time arithmetic needs a time-based unit'],
    ['name.where(%`vs-x`.exists()).family', 'a %variable of the view is not defined'],
  ])('when %s fails, then the message is "%s" and carries no resource value', (path, text) => {
    const error = evaluationError(path);
    expect(error.message).toContain(text);
    expect(error.viewPath).toBe('select[0].column[0].path');
    expect(error.resourceType).toBe('Patient');
    expect(error.message).toContain("ViewDefinition 'v' (views/v.json): select[0].column[0].path");
    expect(error.message).toContain('(on a Patient)');
    for (const secret of SECRETS) expect(error.message).not.toContain(secret);
  });

  it('when a forEach item gives free text to arithmetic, then the text is not in the message', () => {
    const view = compileView({
      resource: 'QuestionnaireResponse',
      select: [
        {
          forEach: 'item',
          column: [
            { name: 'link', path: 'linkId' },
            { name: 'score10', path: 'answer.value * 10' },
          ],
        },
      ],
    });
    const response = {
      resourceType: 'QuestionnaireResponse',
      id: 'q',
      status: 'completed',
      item: [
        { linkId: '1', answer: [{ valueInteger: 3 }] },
        { linkId: 'notes', answer: [{ valueString: 'Jane Roe, MRN-77341, rectal bleeding' }] },
      ],
    };
    expect(() => view.rows(response)).toThrow(ViewEvaluationError);
    try {
      view.rows(response);
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toContain('select[0].column[1].path');
      expect(message).toContain('a value is not a number');
      expect(message).not.toMatch(/Jane|Roe|MRN|bleeding/);
    }
  });

  it('when the failure is of no known kind, then only a generic text is kept', () => {
    expect(describeEngineFailure('cannot handle Annabel Smithers MRN-77341')).toBe(
      'fhirpath evaluation failed',
    );
    expect(describeEngineFailure('Cannot convert 12 Elm to a number')).toBe(
      'a value is not a number',
    );
    expect(describeEngineFailure('"1970-05-06x" is not a date.')).toBe(
      'a value is not a valid FHIR primitive of the expected type',
    );
  });
});
