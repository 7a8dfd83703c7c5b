import { describe, expect, it } from 'vitest';
import {
  findMissingScopes,
  parseScope,
  scopeCovers,
  scopesAllow,
  scopesCover,
  splitScopes,
} from '../../src/auth/scopes.js';

describe('SMART scope arithmetic', () => {
  it('when v1 .read and v2 .rs name the same permission, then each covers the other', () => {
    expect(scopeCovers('system/Observation.read', 'system/Observation.rs')).toBe(true);
    expect(scopeCovers('system/Observation.rs', 'system/Observation.read')).toBe(true);
  });

  it('when a grant is narrower (fewer letters, other type, other context, constrained), then it does not cover', () => {
    expect(scopeCovers('system/Observation.r', 'system/Observation.rs')).toBe(false);
    expect(scopeCovers('system/Patient.rs', 'system/Observation.rs')).toBe(false);
    expect(scopeCovers('patient/Observation.rs', 'system/Observation.rs')).toBe(false);
    expect(scopeCovers('system/Observation.rs?category=laboratory', 'system/Observation.rs')).toBe(
      false,
    );
  });

  it('when the grant is a wildcard, then it covers every type', () => {
    expect(scopeCovers('system/*.read', 'system/MedicationStatement.rs')).toBe(true);
    expect(scopeCovers('system/*.cruds', 'system/Condition.read')).toBe(true);
  });

  it('when scopes are compared as lists, then the uncovered wanted ones are returned in order', () => {
    expect(
      findMissingScopes(
        ['system/Patient.read', 'system/Observation.rs'],
        ['system/Patient.rs', 'system/Condition.rs', 'system/Observation.read', 'system/Group.rs'],
      ),
    ).toEqual(['system/Condition.rs', 'system/Group.rs']);
  });

  it('when SMART v2 letters are granted as separate scopes, then together they cover the combined request', () => {
    const split = ['system/Patient.r', 'system/Patient.s'];
    expect(findMissingScopes(split, ['system/Patient.rs'])).toEqual([]);
    expect(findMissingScopes(split, ['system/Patient.read'])).toEqual([]);
    expect(scopesCover(['system/*.r', 'system/Observation.s'], 'system/Observation.rs')).toBe(true);
    // Only grants that apply are pooled: other type, other context, other constraint.
    expect(
      findMissingScopes(['system/Patient.r', 'system/Observation.s'], ['system/Patient.rs']),
    ).toEqual(['system/Patient.rs']);
    expect(
      findMissingScopes(['system/Patient.r', 'patient/Patient.s'], ['system/Patient.rs']),
    ).toEqual(['system/Patient.rs']);
    expect(
      scopesCover(
        ['system/Observation.r', 'system/Observation.s?category=laboratory'],
        'system/Observation.rs',
      ),
    ).toBe(false);
    expect(scopesCover(['system/Patient.r'], 'system/Patient.rs')).toBe(false);
  });

  it('when a scope is not a resource scope, then it parses to undefined and only equals itself', () => {
    expect(parseScope('openid')).toBeUndefined();
    expect(scopeCovers('launch', 'launch')).toBe(true);
    expect(scopeCovers('launch', 'system/Patient.rs')).toBe(false);
  });

  it('when a token has scopes, then scopesAllow answers read and search per type for system use', () => {
    expect(scopesAllow(['system/Patient.r'], 'Patient', 'r')).toBe(true);
    expect(scopesAllow(['system/Patient.r'], 'Patient', 's')).toBe(false);
    expect(scopesAllow(['user/Patient.read'], 'Patient', 'r')).toBe(false);
    expect(splitScopes('  a  b ')).toEqual(['a', 'b']);
    expect(splitScopes(undefined)).toEqual([]);
  });
});
