// OperationOutcome free text (details.text, coding display, diagnostics) is EHR prose that can
// name a patient: error messages (run records, dashboard, alert webhooks) carry only severity,
// code and coded details (security review finding 2).
import { describe, expect, it } from 'vitest';
import { evaluateCentreAlerts } from '../../src/alerts/evaluate-alerts.js';
import {
  FhirHttpError,
  IncompleteSearchError,
  MalformedFhirResponseError,
  describeIssue,
  parseOutcomeIssues,
} from '../../src/fhir/errors.js';

const PHI = /SMITH|ALICE|00123456|2012-03-04|break-the-glass/;

const outcome = {
  resourceType: 'OperationOutcome',
  issue: [
    {
      severity: 'error',
      code: 'forbidden',
      details: {
        text: 'Access to Patient SMITH, ALICE (MRN 00123456, DOB 2012-03-04) is restricted',
        coding: [
          {
            system: 'http://ehr.example/codes',
            code: 'BTG-REQUIRED',
            display: 'Break the glass for SMITH, ALICE',
          },
        ],
      },
      diagnostics: 'break-the-glass required for MRN 00123456',
    },
    {
      severity: 'warning',
      code: 'processing',
      details: { coding: [{ code: 'MSG_PARAM_INVALID', display: 'ALICE SMITH 00123456' }] },
    },
  ],
};

describe('OperationOutcome issues in messages', () => {
  it('when an issue has details text and a coding display, then only severity, code and system|code are described', () => {
    const issues = parseOutcomeIssues(outcome);
    expect(issues[0]).toMatchObject({
      severity: 'error',
      code: 'forbidden',
      details: 'http://ehr.example/codes|BTG-REQUIRED',
    });
    // The free text stays on the object (never formatted).
    expect(issues[0]!.text).toContain('SMITH');
    expect(issues[1]!.details).toBe('MSG_PARAM_INVALID');
    expect(issues[1]!.text).toBe('ALICE SMITH 00123456');
    expect(describeIssue(issues[0]!)).toBe(
      'error forbidden: http://ehr.example/codes|BTG-REQUIRED',
    );
    expect(issues.map(describeIssue).join(' ')).not.toMatch(PHI);
  });

  it('when FHIR errors are built from such an outcome, then no message quotes its free text and each says it was left out', () => {
    const issues = parseOutcomeIssues(outcome);
    const errors = [
      new FhirHttpError({
        status: 403,
        method: 'GET',
        url: 'https://ehr.example.org/fhir/Observation?patient=abc',
        issues,
      }),
      new MalformedFhirResponseError({
        url: 'https://ehr.example.org/fhir/Observation',
        reason: 'not a Bundle',
        issues,
      }),
      new IncompleteSearchError({
        url: 'https://ehr.example.org/fhir/Observation',
        page: 2,
        resourceType: 'Observation',
        issues,
      }),
    ];
    for (const err of errors) {
      expect(err.message).not.toMatch(PHI);
      expect(err.message).toContain('error forbidden: http://ehr.example/codes|BTG-REQUIRED');
      expect(err.message).toContain('free text is left out');
    }
  });

  it('when a coding code is not a plain token, then it is dropped rather than quoted', () => {
    const [issue] = parseOutcomeIssues({
      resourceType: 'OperationOutcome',
      issue: [
        { severity: 'error', code: 'invalid', details: { coding: [{ code: 'x'.repeat(500) }] } },
      ],
    });
    expect(issue!.details).toBeUndefined();
    expect(describeIssue(issue!)).toBe('error invalid');
  });

  it('when a centre keeps failing, then the alert message (sent to webhooks) names the step and run, not the error text', () => {
    const message = new FhirHttpError({
      status: 403,
      method: 'GET',
      url: 'https://ehr.example.org/fhir/Observation',
      issues: parseOutcomeIssues(outcome),
    }).message;
    const now = new Date('2026-03-10T12:00:00Z');
    const alerts = evaluateCentreAlerts({
      centreId: 'alpha',
      now,
      firstSeenAt: '2026-03-01T00:00:00Z',
      latestSuccess: { startedAt: '2026-03-10T06:00:00Z', endedAt: '2026-03-10T06:10:00Z' },
      thresholds: { staleAfterHours: 48, failuresInARow: 1 },
      recentRuns: [
        {
          runId: 'run-1',
          status: 'failed',
          errors: [{ step: 'pull', message: `${message} MRN 00123456` }],
        },
      ],
    });
    expect(alerts).toHaveLength(1);
    expect(alerts[0]!.message).toContain('latest error at pull in run run-1');
    expect(alerts[0]!.message).not.toMatch(PHI);
  });

  it('when a coding code or system holds prose with spaces, then it is dropped, not formatted', () => {
    const issues = parseOutcomeIssues({
      resourceType: 'OperationOutcome',
      issue: [
        {
          severity: 'error',
          code: 'processing',
          details: {
            coding: [{ system: 'urn:x', code: 'Patient SMITH ALICE 2012-03-04' }],
          },
        },
        {
          severity: 'error',
          code: 'processing',
          details: { coding: [{ system: 'MRN 00123456 of', code: 'NOT-FOUND' }] },
        },
      ],
    });
    const message = new FhirHttpError({
      status: 400,
      method: 'GET',
      url: 'https://ehr.example/fhir/Observation?patient=1',
      issues,
    }).message;
    expect(message).not.toMatch(PHI);
    expect(message).toContain('NOT-FOUND');
  });

  it('when the status line carries a reason phrase of its own, then only a standard phrase is quoted', () => {
    const url = 'https://ehr.example/fhir/Group/g1';
    const custom = new FhirHttpError({
      status: 403,
      method: 'GET',
      url,
      statusText: 'Patient SMITH ALICE DOB 2012-03-04 not found',
    });
    expect(custom.message).not.toMatch(PHI);
    expect(custom.message).toContain('failed with HTTP 403');
    const standard = new FhirHttpError({
      status: 404,
      method: 'GET',
      url,
      statusText: 'Not Found',
    });
    expect(standard.message).toContain('HTTP 404 Not Found');
  });
});
