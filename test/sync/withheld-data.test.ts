// Search warnings that say the EHR left data out become run-record warnings (PHI-free,
// one per distinct kind), so a data manager sees the run's data was partial.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saysDataWithheld, type OutcomeIssue } from '../../src/fhir/errors.js';
import { startSyncFixture, type SyncFixture } from './fixture.js';

describe('which search warnings say data was withheld', () => {
  const warning = (extra: Partial<OutcomeIssue>): OutcomeIssue => ({
    severity: 'warning',
    code: 'processing',
    ...extra,
  });
  it('when Epic answers 4119, or a warning says results were suppressed or restricted, then it counts', () => {
    expect(
      saysDataWithheld(warning({ details: 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369|4119' })),
    ).toBe(true);
    expect(saysDataWithheld(warning({ code: 'suppressed' }))).toBe(true);
    expect(saysDataWithheld(warning({ text: 'Additional data may be present in the chart' }))).toBe(
      true,
    );
    expect(saysDataWithheld(warning({ diagnostics: 'restricted records were withheld' }))).toBe(
      true,
    );
  });
  it('when a notice says no results, a parameter was ignored, or is only information, then it does not', () => {
    expect(
      saysDataWithheld(
        warning({ details: 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369|4101', text: 'no results' }),
      ),
    ).toBe(false);
    expect(
      saysDataWithheld(
        warning({ code: 'not-supported', text: 'ignored search parameters: _elements' }),
      ),
    ).toBe(false);
    expect(
      saysDataWithheld({
        severity: 'information',
        code: 'informational',
        text: 'Additional data may be present',
      }),
    ).toBe(false);
  });
});

describe('a sync whose searches carry a withheld-data warning', () => {
  let f: SyncFixture;
  beforeAll(async () => {
    f = await startSyncFixture({ patients: 3, seed: 67, centreId: 'withheld-data' });
  });
  afterAll(async () => {
    await f?.close();
  });

  it('when every Observation search says additional data may be present, then the run succeeds with one PHI-free warning', async () => {
    f.ehr.faults.set({
      searchOutcome: {
        severity: 'warning',
        code: 'processing',
        text: 'Additional data may be present for Jane Doe, MRN 123456',
        resourceType: 'Observation',
      },
    });
    try {
      const run = await f.runSync('full');
      expect(run.status).toBe('succeeded');
      expect(run.counts.enqueued).toBeGreaterThan(0);
      expect(run.warnings).toEqual([
        {
          step: 'pull',
          message: expect.stringMatching(
            /^the EHR warned that its Observation search results may not hold all data: warning processing; the visits built from it may be incomplete/,
          ),
        },
        {
          step: 'retract',
          message: expect.stringMatching(
            /^the EHR said it left data out of the searches of 3 patient\(s\).*none of them was retracted/,
          ),
        },
      ]);
      const text = JSON.stringify(run.warnings);
      expect(text).not.toMatch(/Jane|Doe|123456/);
    } finally {
      f.ehr.faults.reset();
    }
  });

  it('when the next run gets no such warning, then its record has none (the subscription ended with the run)', async () => {
    const run = await f.runSync('full');
    expect(run.status).toBe('succeeded');
    expect(run.warnings ?? []).toEqual([]);
  });
});
