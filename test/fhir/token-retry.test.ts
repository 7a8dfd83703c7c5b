// Integration: a data request whose access token cannot be fetched for a moment (the token
// endpoint answers 429) is retried with the request's backoff, against the sandbox EHR with
// real SMART auth.
import { afterEach, describe, expect, it } from 'vitest';
import { SmartAuthError } from '../../src/auth/errors.js';
import { createSmartAuth } from '../../src/auth/smart-client.js';
import { createFhirClient } from '../../src/fhir/client.js';
import { startSandboxWithCentre, type SandboxFixture } from '../auth/helpers.js';

let fixture: SandboxFixture | undefined;
afterEach(async () => {
  await fixture?.close();
  fixture = undefined;
});

function clientFor(fx: SandboxFixture, maxRetries: number) {
  const sleeps: number[] = [];
  const client = createFhirClient({
    centre: fx.centre,
    auth: createSmartAuth({ centre: fx.centre }),
    config: { maxRetries, maxRetryAfterSeconds: 30, requestTimeoutMs: 5_000 },
    retry: {
      sleep: async (ms: number) => {
        sleeps.push(ms);
      },
      random: () => 0.5,
    },
  });
  return { client, sleeps };
}

describe('FHIR client with a busy token endpoint', () => {
  it('when the token endpoint answers 429 once, then the read is retried after a backoff and succeeds', async () => {
    fixture = await startSandboxWithCentre({ resources: [{ resourceType: 'Patient', id: 'p1' }] });
    fixture.ehr.faults.set({
      tokenError: { count: 1, status: 429, error: 'temporarily_unavailable' },
    });
    const { client, sleeps } = clientFor(fixture, 2);
    await expect(client.read('Patient', 'p1')).resolves.toMatchObject({ id: 'p1' });
    expect(sleeps).toHaveLength(1);
  });

  it('when the token endpoint keeps answering 503, then the read fails with the retryable auth error after maxRetries', async () => {
    fixture = await startSandboxWithCentre({ resources: [{ resourceType: 'Patient', id: 'p1' }] });
    fixture.ehr.faults.set({ tokenError: { count: 10, status: 503, error: 'server_error' } });
    const { client, sleeps } = clientFor(fixture, 2);
    const error = await client.read('Patient', 'p1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SmartAuthError);
    expect(error).toMatchObject({ step: 'token', retryable: true, status: 503 });
    expect(sleeps).toHaveLength(2);
  });
});
