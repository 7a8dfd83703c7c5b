// The onboarding check end to end: against the sandbox EHR over loopback (real SMART auth),
// through the CLI as centre IT runs it, and with nock for answers the sandbox cannot give
// (a non-R4 server, a 403 with an OperationOutcome).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import nock from 'nock';
import { afterEach, describe, expect, it } from 'vitest';
import type { SmartAuth } from '../../src/auth/smart-client.js';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { formatCheckReport, runCheck, type CheckReport } from '../../src/onboarding/check.js';
import { startSandboxEhr, type SandboxEhr } from '../../src/sandbox/ehr/index.js';
import {
  provisionSandboxCentre,
  type ProvisionSandboxCentreOptions,
} from '../../src/sandbox/ehr/provision.js';

const run = promisify(execFile);
const OLD = { versionId: '1', lastUpdated: '2024-06-01T00:00:00Z' };

function resources() {
  const subject = { reference: 'Patient/p1' };
  return [
    {
      resourceType: 'Patient',
      id: 'p1',
      meta: OLD,
      identifier: [{ system: 'urn:mrn', value: '100' }],
    },
    { resourceType: 'Group', id: 'ibd', meta: OLD, member: [{ entity: subject }] },
    { resourceType: 'Medication', id: 'm1', meta: OLD, code: { text: 'prednisolone' } },
    { resourceType: 'Encounter', id: 'e1', meta: OLD, status: 'finished', subject },
    { resourceType: 'Observation', id: 'o1', meta: OLD, status: 'final', subject },
    { resourceType: 'Condition', id: 'c1', meta: OLD, subject },
    {
      resourceType: 'MedicationRequest',
      id: 'mr1',
      meta: OLD,
      status: 'active',
      intent: 'order',
      subject,
      medicationReference: { reference: 'Medication/m1' },
    },
    { resourceType: 'MedicationStatement', id: 'ms1', meta: OLD, status: 'active', subject },
  ];
}

interface Fixture {
  ehr: SandboxEhr;
  centre: CentreConfig;
  dir: string;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
  nock.cleanAll();
  nock.enableNetConnect();
});

async function startFixture(
  options: Omit<ProvisionSandboxCentreOptions, 'keysDir'> = {},
): Promise<Fixture> {
  const dir = await mkdtemp(join(tmpdir(), 'lhn-check-'));
  const ehr = await startSandboxEhr({ resources: resources(), exportPollsBeforeDone: 1 });
  cleanups.push(async () => {
    await ehr.close();
    await rm(dir, { recursive: true, force: true });
  });
  const { centre } = await provisionSandboxCentre(ehr, {
    keysDir: dir,
    centreId: 'check-centre',
    ...options,
    centre: { cohort: { group: 'ibd' }, ...options.centre },
  });
  return { ehr, centre, dir };
}

const statusOf = (report: CheckReport) =>
  Object.fromEntries(report.steps.map((s) => [s.id, s.status]));

describe('onboarding check against the sandbox EHR', () => {
  it('when everything is set up, then every step is ok and the text report says so', async () => {
    const { centre } = await startFixture();
    const report = await runCheck(centre);
    expect(statusOf(report)).toEqual({
      discovery: 'ok',
      token: 'ok',
      scopes: 'ok',
      capabilities: 'ok',
      cohort: 'ok',
      'search:Patient': 'ok',
      'search:Encounter': 'ok',
      'search:Observation': 'ok',
      'search:MedicationStatement': 'ok',
      'search:MedicationRequest': 'ok',
      'search:Condition': 'ok',
      'read:Medication': 'ok',
    });
    expect(report.ok).toBe(true);
    const text = formatCheckReport(report);
    expect(text).toMatch(/\[ ok \] 1\. SMART discovery: token endpoint http:\/\/127\.0\.0\.1/);
    expect(text).toMatch(/Group "ibd" lists 1 active patient/);
    expect(text).toMatch(/Result: OK \(12 of 12 steps passed\)/);
  });

  it("when the EHR ignores the patient search parameter, then the search steps pass with a hint that another patient's resources came back", async () => {
    const { ehr, centre } = await startFixture();
    const other = { reference: 'Patient/p2' };
    ehr.upsert({
      resourceType: 'Patient',
      id: 'p2',
      identifier: [{ system: 'urn:mrn', value: '200' }],
    });
    ehr.upsert({ resourceType: 'Encounter', id: 'e2', status: 'finished', subject: other });
    ehr.upsert({ resourceType: 'Observation', id: 'o2', status: 'final', subject: other });
    ehr.faults.set({ ignoreSearchParams: ['patient'] });
    const report = await runCheck(centre);
    const search = report.steps.find((s) => s.id === 'search:Observation')!;
    expect(search.status).toBe('ok');
    expect(search.reason).toMatch(/search works: 2 on the first page/);
    expect(search.hint).toMatch(
      /^1 of them belong to another patient: the EHR seems to ignore the patient search parameter/,
    );
    // Patient is found by _id, which the EHR still honours: no hint there.
    expect(report.steps.find((s) => s.id === 'search:Patient')?.hint).toBeUndefined();
  });

  it('when the EHR has no MedicationStatement (Epic R4), then the capabilities and search steps say to remove it from pull.resourceTypes', async () => {
    const { ehr, centre } = await startFixture();
    ehr.faults.set({ unsupportedTypes: ['MedicationStatement'] });
    const report = await runCheck(centre);
    const capabilities = report.steps.find((s) => s.id === 'capabilities')!;
    expect(capabilities.status).toBe('failed');
    expect(capabilities.reason).toMatch(/MedicationStatement is not listed/);
    expect(capabilities.hint).toMatch(
      /remove MedicationStatement from pull\.resourceTypes in the centre file.*MedicationRequest carries its medication data/,
    );
    const search = report.steps.find((s) => s.id === 'search:MedicationStatement')!;
    expect(search.status).toBe('failed');
    expect(search.hint).toMatch(
      /does not serve MedicationStatement searches \(404\).*remove MedicationStatement from pull\.resourceTypes/,
    );
    expect(statusOf(report)['search:MedicationRequest']).toBe('ok');
  });

  it('when the centre pulls in bulk mode and the EHR refuses MedicationStatement in the export, then the export step passes without it and says to remove it', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    // Listed in the CapabilityStatement, but not exportable.
    ehr.faults.set({ unsupportedTypes: ['MedicationStatement'] });
    const report = await runCheck(centre);
    const step = report.steps.find((s) => s.id === 'export')!;
    expect(step.status).toBe('ok');
    expect(step.reason).toMatch(/accepted the export \(202\) without MedicationStatement/);
    expect(step.hint).toMatch(/remove MedicationStatement from pull\.resourceTypes/);
  });

  it('when the centre pulls in bulk mode, then an export is kicked off and cancelled with DELETE', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    const report = await runCheck(centre);
    expect(statusOf(report).export).toBe('ok');
    expect(report.ok).toBe(true);
    expect(ehr.requests.some((r) => r.kind === 'export' && r.status === 202)).toBe(true);
    expect(ehr.requests.some((r) => r.method === 'DELETE' && r.kind === 'status')).toBe(true);
  });

  it('when the export kick-off answers 429 (another export running, as Oracle Health allows one per client), then the export step says so and to retry after it ends', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    ehr.faults.set({ rateLimit: { count: 10, kinds: ['export'], retryAfter: 0 } });
    const report = await runCheck(centre);
    const step = report.steps.find((s) => s.id === 'export')!;
    expect(step.status).toBe('failed');
    expect(step.reason).toMatch(/HTTP 429 from .*\$export/);
    expect(step.hint).toMatch(/another export is probably still running for this client/);
    expect(step.hint).toMatch(/Oracle Health runs one export per client at a time/);
    expect(step.hint).toMatch(/Run the check again after that export has ended/);
    expect(step.hint).not.toMatch(/server log/);
  });

  it('when the check cannot cancel its test export, then the export step warns that it can block the next syncs’ exports', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    ehr.faults.set({ refuseExportCancel: true });
    const report = await runCheck(centre);
    const step = report.steps.find((s) => s.id === 'export')!;
    expect(step.status).toBe('ok');
    expect(step.reason).toMatch(/could not cancel the test job/);
    expect(step.hint).toMatch(
      /one export per client at a time \(Oracle Health\), it blocks the next syncs' exports until it ends/,
    );
  });

  it('when a bulk centre checks against an EHR that refuses _typeFilter, then the export step passes and says syncs will not be narrowed', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    ehr.faults.set({ typeFilter: 'reject' });
    const report = await runCheck(centre);
    const step = report.steps.find((s) => s.id === 'export')!;
    expect(step.status).toBe('ok');
    expect(step.reason).toMatch(/without _typeFilter/);
    expect(step.hint).toMatch(/refused _typeFilter/);
    expect(ehr.requests.filter((r) => r.kind === 'export').map((r) => r.status)).toEqual([
      400, 202,
    ]);
    expect(report.ok).toBe(true);
    // The caveat reaches centre IT in the text report too, not only in --json.
    expect(formatCheckReport(report)).toMatch(
      /\[ ok \] .*Bulk export kick-off[^\n]*\n\s+note: .*refused _typeFilter/,
    );
  });

  it('when a bulk centre checks against an EHR that refuses Medication in a Patient-level export (HAPI), then the export step passes and says Medications are read one by one', async () => {
    const { ehr, centre } = await startFixture({ centre: { pull: { mode: 'bulk' } } });
    ehr.faults.set({ nonCompartmentTypes: 'reject' });
    const report = await runCheck(centre);
    const step = report.steps.find((s) => s.id === 'export')!;
    expect(step.status).toBe('ok');
    expect(step.reason).toMatch(/without Medication/);
    expect(step.hint).toMatch(/refused to export Medication.*read the referenced Medication/);
    const kickOffs = ehr.requests.filter((r) => r.kind === 'export');
    expect(kickOffs.map((r) => r.status)).toEqual([400, 400, 202]);
    // The accepted kick-off kept the lookback _typeFilter and dropped only Medication.
    expect(decodeURIComponent(kickOffs[2]!.url)).toMatch(/_typeFilter=/);
    expect(decodeURIComponent(kickOffs[2]!.url)).not.toMatch(/[=,]Medication(,|&|$)/);
    expect(report.ok).toBe(true);
  });

  it('when the kid is not the registered one, then the token step fails with a hint naming the kid and later steps are skipped', async () => {
    const { centre } = await startFixture();
    const wrong = { ...centre, auth: { ...centre.auth, kid: 'not-the-registered-kid' } };
    const report = await runCheck(wrong);
    const token = report.steps.find((s) => s.id === 'token')!;
    expect(token.status).toBe('failed');
    expect(token.reason).toMatch(/invalid_client/);
    expect(token.hint).toMatch(/not-the-registered-kid/);
    expect(statusOf(report).scopes).toBe('skipped');
    expect(statusOf(report)['search:Observation']).toBe('skipped');
    expect(report.ok).toBe(false);
    // The signing-key step, before the token step, says which kid the key file carries.
    const key = report.steps.find((s) => s.id === 'key')!;
    expect(key).toMatchObject({ status: 'failed', required: true });
    expect(key.reason).toContain(`"not-the-registered-kid" is not the kid`);
    expect(key.hint).toContain(`auth.kid: ${centre.auth.kid}`);
    expect(formatCheckReport(report)).toMatch(
      /\[FAIL\] 2\. Signing key: [\s\S]*\[FAIL\] 3\. Access token: invalid_client[\s\S]*hint: /,
    );
  });

  it('when the EHR grants fewer scopes than the pull needs, then the scopes step lists what is missing', async () => {
    const { centre } = await startFixture({
      allowedScopes: ['system/Patient.rs', 'system/Group.rs', 'system/Encounter.rs'],
      scopePolicy: 'downscope',
    });
    const report = await runCheck(centre);
    const scopes = report.steps.find((s) => s.id === 'scopes')!;
    expect(scopes.status).toBe('failed');
    expect(scopes.reason).toMatch(/Observation/);
    expect(scopes.hint).toMatch(/system\/Observation\.rs/);
    expect(statusOf(report)['search:Observation']).toBe('failed');
    expect(statusOf(report)['search:Encounter']).toBe('ok');
    expect(report.ok).toBe(false);
  });

  it('when the EHR grants each SMART v2 letter as its own scope (.r and .s), then the scopes step is ok', async () => {
    const { centre, ehr } = await startFixture();
    // The EHR answers `system/X.rs` as `system/X.r system/X.s` (the letters are independent).
    const splitting: typeof fetch = async (input, init) => {
      const res = await fetch(input, init);
      if (String(input instanceof Request ? input.url : input) !== ehr.tokenUrl || !res.ok)
        return res;
      const body = (await res.json()) as { scope: string };
      body.scope = body.scope.replace(/(system\/\w+)\.rs\b/g, '$1.r $1.s');
      return new Response(JSON.stringify(body), {
        status: res.status,
        headers: { 'content-type': 'application/json' },
      });
    };
    const report = await runCheck(centre, { fetch: splitting });
    const scopes = report.steps.find((s) => s.id === 'scopes')!;
    expect(scopes.details?.[0]).toMatch(/system\/Patient\.r system\/Patient\.s/);
    expect(scopes).toMatchObject({ status: 'ok' });
    expect(report.ok).toBe(true);
  });

  it('when the EHR has no .well-known/smart-configuration, then discovery uses the CapabilityStatement and says so', async () => {
    const { centre, ehr } = await startFixture();
    const noSmartConfiguration: typeof fetch = (input, init) =>
      String(input instanceof Request ? input.url : input).endsWith(
        '/.well-known/smart-configuration',
      )
        ? Promise.resolve(new Response('{}', { status: 404 }))
        : fetch(input, init);
    const report = await runCheck(centre, { fetch: noSmartConfiguration });
    const discovery = report.steps.find((s) => s.id === 'discovery')!;
    expect(discovery.status).toBe('ok');
    expect(discovery.reason).toBe(
      `token endpoint ${ehr.tokenUrl} (from the CapabilityStatement's oauth-uris extension (the EHR has no .well-known/smart-configuration))`,
    );
    expect(statusOf(report).token).toBe('ok');
    expect(report.ok).toBe(true);
  });

  it('when the EHR needs a category on Observation searches, then the plain search fails pointing at pull.searches and configured searches pass one by one', async () => {
    const plain = await startFixture();
    plain.ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
    const refused = await runCheck(plain.centre);
    const step = refused.steps.find((s) => s.id === 'search:Observation')!;
    expect(step.status).toBe('failed');
    expect(`${step.reason} ${step.hint ?? ''}`).toMatch(/pull\.searches/);
    expect(refused.ok).toBe(false);

    const { ehr, centre } = await startFixture({
      centre: {
        pull: { searches: { Observation: [{ category: 'vital-signs' }, { category: 'exam' }] } },
      },
    });
    ehr.faults.set({ requireSearchParams: { Observation: ['category', 'code'] } });
    const report = await runCheck(centre);
    expect(statusOf(report)).toMatchObject({
      'search:Observation?category=vital-signs': 'ok',
      'search:Observation?category=exam': 'ok',
      'search:Encounter': 'ok',
    });
    expect(statusOf(report)).not.toHaveProperty('search:Observation');
    expect(report.ok).toBe(true);
  });

  it('when the cohort Group does not exist, then the cohort step fails with a hint and searches are skipped', async () => {
    const { centre } = await startFixture({ centre: { cohort: { group: 'no-such-group' } } });
    const report = await runCheck(centre);
    const cohort = report.steps.find((s) => s.id === 'cohort')!;
    expect(cohort.status).toBe('failed');
    expect(cohort.hint).toMatch(/cohort\.group/);
    expect(statusOf(report)['search:Encounter']).toBe('skipped');
  });

  it('when the cohort is a roster, then one line is resolved without printing the identifier', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lhn-roster-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const roster = join(dir, 'roster.txt');
    await writeFile(roster, 'urn:mrn|100\nurn:mrn|999\n');
    const { centre } = await startFixture({ centre: { cohort: { roster } } });
    const report = await runCheck(centre);
    expect(statusOf(report).cohort).toBe('ok');
    expect(report.ok).toBe(true);
    expect(formatCheckReport(report)).not.toMatch(/urn:mrn|\b100\b|999/);
  });
});

describe('onboarding check from the command line', () => {
  async function writeCentreFile(centre: CentreConfig, dir: string, kid = centre.auth.kid) {
    const file = join(dir, `${centre.id}.json`);
    await writeFile(
      file,
      JSON.stringify({
        id: centre.id,
        name: centre.name,
        fhir: { baseUrl: centre.fhir.baseUrl },
        auth: {
          clientId: centre.auth.clientId,
          privateKeyFile: centre.auth.privateKeyFile,
          kid,
          alg: centre.auth.alg,
        },
        cohort: centre.cohort,
      }),
    );
    return file;
  }

  const cli = (args: string[]) =>
    run(process.execPath, ['bin/lhn-bridge.js', 'check', ...args], {
      cwd: process.cwd(),
      timeout: 60_000,
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({
        code: e.code,
        stdout: e.stdout,
        stderr: e.stderr,
      }),
    );

  it('when centre IT runs check on a good centre file, then it prints ok steps and exits 0', async () => {
    const { centre, dir } = await startFixture();
    const file = await writeCentreFile(centre, dir);
    const result = await cli([file]);
    expect(result.stdout).toMatch(/\[ ok \] 2\. Access token/);
    expect(result.stdout).toMatch(/\[ ok \] .*Search Observation for one cohort patient/);
    expect(result.stdout).toMatch(/Result: OK/);
    expect(result.code).toBe(0);
  });

  it('when the centre file names a wrong kid, then check prints the failing step with its hint and exits 1', async () => {
    const { centre, dir } = await startFixture();
    await writeCentreFile(centre, dir, 'wrong-kid');
    const result = await cli(['check-centre', '--centres-dir', dir]);
    expect(result.stdout).toMatch(/\[FAIL\] 2\. Signing key: auth\.kid "wrong-kid" is not the kid/);
    expect(result.stdout).toMatch(/\[FAIL\] 3\. Access token: invalid_client/);
    expect(result.stdout).toMatch(/hint: .*kid "wrong-kid"/);
    expect(result.stdout).toMatch(/\[skip\] .*Granted scopes: needs an access token/);
    expect(result.stderr).toMatch(/check failed: 2 required steps failed/);
    expect(result.code).toBe(1);
  });
});

describe('onboarding check verdicts on EHR answers (nock)', () => {
  const base = 'https://ehr.example/fhir';
  const centre = parseCentre(
    {
      id: 'nock-centre',
      name: 'Nock centre',
      fhir: { baseUrl: base },
      auth: { clientId: 'bridge', privateKeyFile: 'k.json', kid: 'k1' },
      cohort: { group: 'ibd' },
      pull: { resourceTypes: ['Observation'] },
    },
    '/tmp/nock-centre.yaml',
  );
  const auth: SmartAuth = {
    discover: async () => ({ token_endpoint: 'https://ehr.example/token' }),
    getAccessToken: async () => ({
      token: 't',
      expiresAt: Date.now() + 300_000,
      scopes: ['system/*.rs'],
      missingScopes: [],
      origin: 'https://ehr.example',
    }),
    invalidate: () => undefined,
    tokenUrl: 'https://ehr.example/token',
    tokenUrlSource: 'smart-configuration',
    clockSkewMs: 0,
  };

  it('when the server is not FHIR R4 and a search is forbidden, then both steps fail with hints', async () => {
    nock.disableNetConnect();
    nock('https://ehr.example')
      .get('/fhir/metadata')
      .reply(200, {
        resourceType: 'CapabilityStatement',
        fhirVersion: '3.0.2',
        rest: [{ mode: 'server', resource: [{ type: 'Observation' }, { type: 'Group' }] }],
      })
      .get('/fhir/Group/ibd')
      .reply(200, { resourceType: 'Group', member: [{ entity: { reference: 'Patient/p1' } }] })
      .get('/fhir/Observation')
      .query(true)
      .reply(403, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'forbidden',
            details: { text: 'client not authorized for Observation' },
          },
        ],
      });
    const report = await runCheck(centre, { auth });
    const capabilities = report.steps.find((s) => s.id === 'capabilities')!;
    expect(capabilities.status).toBe('failed');
    expect(capabilities.reason).toMatch(/3\.0\.2 is not R4/);
    const search = report.steps.find((s) => s.id === 'search:Observation')!;
    expect(search.status).toBe('failed');
    expect(search.reason).toMatch(/HTTP 403/);
    // Only severity and code: the outcome's free text may name a patient.
    expect(search.details).toEqual(['error forbidden']);
    expect(search.hint).toMatch(/scopes granted to client "bridge"/);
    expect(report.ok).toBe(false);
  });

  it('when a search answers 200 with an OperationOutcome, then the search step shows its issues', async () => {
    nock.disableNetConnect();
    nock('https://ehr.example')
      .get('/fhir/metadata')
      .reply(200, {
        resourceType: 'CapabilityStatement',
        fhirVersion: '4.0.1',
        rest: [{ mode: 'server', resource: [{ type: 'Observation' }, { type: 'Group' }] }],
      })
      .get('/fhir/Group/ibd')
      .reply(200, { resourceType: 'Group', member: [{ entity: { reference: 'Patient/p1' } }] })
      .get('/fhir/Observation')
      .query(true)
      .reply(200, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: 'too-costly',
            details: { text: 'Search too broad' },
          },
        ],
      });
    const report = await runCheck(centre, { auth });
    const search = report.steps.find((s) => s.id === 'search:Observation')!;
    expect(search.status).toBe('failed');
    expect(search.reason).toMatch(/OperationOutcome instead of a Bundle/);
    expect(search.details).toEqual(['error too-costly']);
    expect(search.hint).toMatch(/OperationOutcome instead of results/);
  });

  it('when the cohort Group holds no members (only quantity), then the cohort step fails naming what the Group holds and the searches are skipped', async () => {
    nock.disableNetConnect();
    nock('https://ehr.example')
      .get('/fhir/metadata')
      .reply(200, {
        resourceType: 'CapabilityStatement',
        fhirVersion: '4.0.1',
        rest: [{ mode: 'server', resource: [{ type: 'Observation' }, { type: 'Group' }] }],
      })
      .get('/fhir/Group/ibd')
      .reply(200, { resourceType: 'Group', id: 'ibd', actual: true, quantity: 300 });
    const report = await runCheck(centre, { auth });
    const cohort = report.steps.find((s) => s.id === 'cohort')!;
    expect(cohort.status).toBe('failed');
    expect(cohort.reason).toBe(
      'the cohort Group "ibd" lists no active Patient members (it holds no member entries, quantity 300, actual true)',
    );
    expect(cohort.hint).toMatch(/Ask centre IT to list the registry patients in the Group/);
    expect(statusOf(report)['search:Observation']).toBe('skipped');
    expect(report.ok).toBe(false);
  });

  it('when the EHR lists only another algorithm than the key’s, then the discovery hint gives the keys generate command with --alg, and with none usable it names what the EHR lists', async () => {
    const discoveryWith = async (algs: string[]) => {
      const report = await runCheck(centre, {
        auth: {
          ...auth,
          discover: async () => ({
            token_endpoint: 'https://ehr.example/token',
            token_endpoint_auth_signing_alg_values_supported: algs,
          }),
          getAccessToken: async () => {
            throw new Error('stop here');
          },
        },
      });
      return report.steps.find((s) => s.id === 'discovery')!;
    };
    const rs384 = await discoveryWith(['RS384']);
    expect(rs384.status).toBe('failed');
    expect(rs384.reason).toBe('the EHR does not accept ES384 client assertions');
    expect(rs384.hint).toContain('`lhn-bridge keys generate --centre nock-centre --alg RS384`');
    const none = await discoveryWith(['RS256', 'PS256']);
    expect(none.status).toBe('failed');
    expect(none.hint).not.toMatch(/Generate a supported key|keys generate/);
    expect(none.hint).toMatch(/lists RS256, PS256, and lhn-bridge signs with ES384 or RS384 only/);
  });
});
