// fixtures/golden/README.md is how a data manager or reviewer finds the case for a rule: its
// table has one row per golden case, and no row for a case that is gone.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { listGoldenCases } from '../../fixtures/golden/run-golden.js';

describe('golden fixtures README', () => {
  it('when the cases are listed, then the README table has exactly one row for each', () => {
    const readme = readFileSync(
      new URL('../../fixtures/golden/README.md', import.meta.url),
      'utf8',
    );
    const rows = [...readme.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);
    expect(rows).toEqual(listGoldenCases().map((c) => c.name));
  });
});
