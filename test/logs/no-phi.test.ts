// The logs promise: a full sandbox sync, logged at debug level by the API and the worker,
// leaves no patient name, identifier value or birth date from the EHR in the logs (nor the
// API keys, the EHR's access tokens or the private key).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile } from 'node:fs/promises';
import { startSandboxWorld, type SandboxWorld } from '../api/sandbox-world.js';
import { call } from '../api/helpers.js';
import { waitFor } from '../sync/helpers.js';

interface PatientLike {
  resourceType: string;
  id?: string;
  birthDate?: string;
  name?: { family?: string; given?: string[]; text?: string }[];
  identifier?: { value?: string }[];
}

/** Names, identifier values and birth dates found in the generated resources. */
function collectPhi(resources: Iterable<unknown>): {
  names: Set<string>;
  identifiers: Set<string>;
  birthDates: Set<string>;
} {
  const names = new Set<string>();
  const identifiers = new Set<string>();
  const birthDates = new Set<string>();
  for (const resource of resources as Iterable<PatientLike>) {
    for (const id of resource.identifier ?? []) if (id.value) identifiers.add(id.value);
    if (resource.resourceType !== 'Patient') continue;
    if (resource.birthDate) birthDates.add(resource.birthDate);
    for (const name of resource.name ?? []) {
      if (name.family) names.add(name.family);
      for (const given of name.given ?? []) names.add(given);
      if (name.text) names.add(name.text);
    }
  }
  return { names, identifiers, birthDates };
}

describe('no PHI in the logs', () => {
  let world: SandboxWorld;

  beforeAll(async () => {
    world = await startSandboxWorld({ patients: 15, seed: 23, logLevel: 'debug' });
  });
  afterAll(async () => {
    await world?.close();
  });

  it('when a full sandbox sync runs with debug logging, then no patient name, identifier value or birth date appears in any log line', async () => {
    const trigger = await call(`${world.url}/api/centres/${world.centre.id}/sync`, {
      key: world.keys.operator,
      method: 'POST',
      body: { mode: 'full' },
    });
    expect(trigger.status).toBe(202);
    await waitFor(
      async () =>
        (await world.api.runtime.runStore.get(trigger.body.runId))?.status === 'succeeded',
      90_000,
      'the sync to succeed',
    );
    const run = await world.api.runtime.runStore.get(trigger.body.runId);
    expect(run!.counts.enqueued).toBeGreaterThan(0);
    await waitFor(
      () => world.registry.submissions().length === run!.counts.enqueued,
      60_000,
      'every submission delivered',
    );
    // Read the API too, so its request logs are part of what is checked.
    for (const path of ['/api/centres', `/api/runs/${run!.runId}`, '/api/submissions/failed'])
      expect((await call(`${world.url}${path}`, { key: world.keys.viewer })).status).toBe(200);
    await new Promise((r) => setTimeout(r, 200));

    const logs = world.logs.text();
    const lines = world.logs.lines();
    // The logs are real: the sync, the deliveries and the requests were logged.
    expect(lines.length).toBeGreaterThan(20);
    expect(lines.some((l) => l.level === 20)).toBe(true);
    expect(logs).toContain(run!.runId);

    const phi = collectPhi(world.generated.resources());
    expect(phi.names.size).toBeGreaterThan(0);
    expect(phi.identifiers.size).toBeGreaterThan(0);
    expect(phi.birthDates.size).toBeGreaterThan(0);
    const found: string[] = [];
    for (const name of phi.names)
      if (new RegExp(`\\b${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`).test(logs))
        found.push(`name ${name}`);
    for (const value of phi.identifiers)
      if (logs.includes(value)) found.push(`identifier ${value}`);
    for (const date of phi.birthDates) if (logs.includes(date)) found.push(`birth date ${date}`);
    expect(found).toEqual([]);

    for (const key of Object.values(world.keys)) expect(logs).not.toContain(key);
    const privateJwk = JSON.parse(await readFile(world.centre.auth.privateKeyFile, 'utf8')) as {
      d: string;
    };
    expect(logs).not.toContain(privateJwk.d);
    expect(logs).not.toMatch(/eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\./);
  });
});
