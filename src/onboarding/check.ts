// The onboarding check: what centre IT runs after filling in a centre file. It walks the
// connection the way a sync will (discovery, token, scopes, CapabilityStatement, cohort,
// one search per resource type for one cohort patient, or a bulk kick-off that is cancelled
// at once), loads the mapping pack with the centre's overrides, and reports each step as
// ok / failed / skipped with the reason and a hint saying what to change. It never prints
// tokens, identifiers or resource content: counts and ids of configuration only. The CLI
// (`lhn-bridge check`) and the admin API share it.
import { resolve } from 'node:path';
import { CapabilityTool } from 'fhir-kit-client';
import type { CentreConfig } from '../config/centre.js';
import type { ServiceConfig } from '../config/service.js';
import { SmartAuthError } from '../auth/errors.js';
import {
  buildJwks,
  insecureKeyFileMessage,
  insecureKeyFileMode,
  KeyFileError,
  loadPrivateKey,
  thumbprintKid,
} from '../auth/keys.js';
import { findMissingScopes, scopesAllow } from '../auth/scopes.js';
import {
  createSmartAuth,
  describeTokenUrlSource,
  keyUnusableHint,
  unsupportedAlgHint,
  type AccessToken,
  type SmartAuth,
} from '../auth/smart-client.js';
import { createFhirClient, searchMatches, type FhirClient } from '../fhir/client.js';
import {
  describeIssue,
  FhirHttpError,
  FhirNetworkError,
  IncompleteSearchError,
  MalformedFhirResponseError,
  OriginRefusedError,
} from '../fhir/errors.js';
import {
  buildExportUrl,
  cancelExport,
  kickOffNarrowed,
  narrowingFilters,
} from '../fhir/pull-bulk.js';
import {
  belongsToAnotherPatient,
  CohortError,
  EVENT_RESOURCE_TYPES,
  patientSearchParams,
  resolveCohort,
  searchesOf,
} from '../fhir/pull-search.js';
import type { FhirResource } from '../fhir/types.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { centreMappingIssues } from './centre-mapping.js';

/** Outcome of one step. */
export type CheckStepStatus = 'ok' | 'failed' | 'skipped';

/** One step of the report. */
export interface CheckStep {
  /** Stable id, e.g. `discovery`, `token`, `search:Observation`, `export`. */
  id: string;
  title: string;
  status: CheckStepStatus;
  /** A failed required step makes the whole check fail. */
  required: boolean;
  /** What happened, in one sentence. */
  reason: string;
  /** What to do about it (failed steps, sometimes ok steps with caveats). */
  hint?: string;
  /** Further facts and warnings, one line each. */
  details?: string[];
  durationMs: number;
}

/** The whole report. */
export interface CheckReport {
  centreId: string;
  centreName: string;
  baseUrl: string;
  mode: 'search' | 'bulk';
  startedAt: string;
  finishedAt: string;
  /** True when no required step failed. */
  ok: boolean;
  steps: CheckStep[];
}

/** What runCheck needs; everything has a default built from the centre. */
export interface CheckDeps {
  auth?: SmartAuth;
  client?: FhirClient;
  /** FHIR request settings (default: 15 s timeout, 1 retry, Retry-After capped at 30 s). */
  fhirConfig?: ServiceConfig['fhir'];
  logger?: Logger;
  fetch?: typeof fetch;
  now?: () => number;
  signal?: AbortSignal;
  /**
   * The keys folder whose JWKS this service publishes (service config `keysDir`): when given,
   * the signing-key step checks that auth.kid is in it.
   */
  keysDir?: string;
  /**
   * The mapping packs folder (service config `mappingsDir`): when given, the mapping step
   * loads the centre's pack and applies its overrides, as a sync will.
   */
  mappingsDir?: string;
}

const DEFAULT_FHIR_CONFIG: ServiceConfig['fhir'] = {
  requestTimeoutMs: 15_000,
  maxRetries: 1,
  maxRetryAfterSeconds: 30,
};

type StepResult = Omit<CheckStep, 'id' | 'title' | 'required' | 'durationMs'>;

/** Runs every step against the centre's EHR and returns the report (never throws for EHR problems). */
export async function runCheck(centre: CentreConfig, deps: CheckDeps = {}): Promise<CheckReport> {
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? silentLogger;
  const startedAt = new Date(now()).toISOString();
  const fhirConfig = deps.fhirConfig ?? DEFAULT_FHIR_CONFIG;
  // Discovery and the token request honour the check's per-request timeout (--timeout-ms)
  // too, not only the FHIR requests: a hung authorization server must not stall the check.
  const auth =
    deps.auth ??
    createSmartAuth({
      centre,
      logger,
      timeoutMs: fhirConfig.requestTimeoutMs,
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
    });
  const client =
    deps.client ??
    createFhirClient({
      centre,
      auth,
      logger,
      config: fhirConfig,
      ...(deps.fetch ? { fetch: deps.fetch } : {}),
    });
  const signalOpt = deps.signal ? { signal: deps.signal } : {};
  const steps: CheckStep[] = [];

  const run = async (
    id: string,
    title: string,
    required: boolean,
    body: () => Promise<StepResult> | StepResult,
  ): Promise<CheckStep> => {
    const started = now();
    let result: StepResult;
    try {
      result = await body();
    } catch (err) {
      result = describeFailure(err, centre);
    }
    const step: CheckStep = { id, title, required, ...result, durationMs: now() - started };
    steps.push(step);
    logger.info({ centre: centre.id, step: id, status: step.status }, 'onboarding check step');
    return step;
  };
  const skip = (id: string, title: string, required: boolean, reason: string) =>
    steps.push({ id, title, required, status: 'skipped', reason, durationMs: 0 });

  // 0. A private key file group or others can read fails the check (it still signs).
  const keyMode = await insecureKeyFileMode(centre.auth.privateKeyFile);
  if (keyMode !== undefined)
    await run('key-file', 'Private key file permissions', true, () => ({
      status: 'failed',
      reason: `group or others can read the private key file (mode 0${keyMode.toString(8)})`,
      hint: insecureKeyFileMessage(centre.auth.privateKeyFile, keyMode),
    }));

  // 1. Discovery. Not required when the centre file names the token URL.
  await run('discovery', 'SMART discovery', !centre.fhir.tokenUrl, async () => {
    const config = await auth.discover();
    const details: string[] = [];
    const algs = config.token_endpoint_auth_signing_alg_values_supported;
    const methods = config.token_endpoint_auth_methods_supported;
    if (algs) details.push(`signing algorithms: ${algs.join(', ')}`);
    if (methods) details.push(`client auth methods: ${methods.join(', ')}`);
    if (Array.isArray(algs) && algs.length > 0 && !algs.includes(centre.auth.alg))
      return {
        status: 'failed',
        reason: `the EHR does not accept ${centre.auth.alg} client assertions`,
        hint: unsupportedAlgHint(centre.id, algs),
        details,
      };
    if (Array.isArray(methods) && methods.length > 0 && !methods.includes('private_key_jwt'))
      return {
        status: 'failed',
        reason: 'the EHR does not advertise private_key_jwt (SMART Backend Services)',
        hint: 'Ask centre IT to enable SMART Backend Services for this client.',
        details,
      };
    return {
      status: 'ok',
      reason:
        `token endpoint ${auth.tokenUrl ?? config.token_endpoint}` +
        (auth.tokenUrlSource ? ` (from ${describeTokenUrlSource(auth.tokenUrlSource)})` : ''),
      details,
    };
  });

  // 1b. Signing key: listed only when something is wrong with it (like the key-file step).
  // An injected SmartAuth signs with its own key, so only the check's own client is judged.
  const keyVerdict = deps.auth ? undefined : await judgeSigningKey(centre, deps.keysDir, logger);
  if (keyVerdict) await run('key', 'Signing key', true, () => keyVerdict.result);

  // 2. Token (not attempted when no assertion can be signed).
  let token: AccessToken | undefined;
  let tokenStep: CheckStep | undefined;
  if (keyVerdict?.unusable) skip('token', 'Access token', true, 'needs a usable signing key');
  else
    tokenStep = await run('token', 'Access token', true, async () => {
      token = await auth.getAccessToken();
      const seconds = Math.round((token.expiresAt - now()) / 1000);
      const details: string[] = [];
      if (auth.clockSkewMs !== undefined && Math.abs(auth.clockSkewMs) > 60_000)
        details.push(
          `clock skew: the EHR's clock differs from ours by ${Math.round(auth.clockSkewMs / 1000)} s; assertions are signed with the EHR's time meanwhile, but fix NTP`,
        );
      return {
        status: 'ok',
        reason: `token issued for client "${centre.auth.clientId}" (kid ${centre.auth.kid}), valid ${seconds} s`,
        ...(details.length > 0 ? { details } : {}),
      };
    });

  const later = [
    ['scopes', 'Granted scopes'],
    ['capabilities', 'CapabilityStatement'],
    ['cohort', 'Cohort'],
  ] as const;
  if (tokenStep?.status !== 'ok' || !token) {
    const reason = keyVerdict?.unusable ? 'needs a usable signing key' : 'needs an access token';
    for (const [id, title] of later) skip(id, title, true, reason);
    skipDataSteps(centre, skip, reason);
    return finish();
  }
  const granted = token;

  // 3. Scopes: everything asked was granted, and the grants cover what the pull does with
  // each type (read and search, or read only for the cohort Group and referenced Medications).
  await run('scopes', 'Granted scopes', true, (): StepResult => {
    const asked = centre.auth.scopes;
    const notGranted = granted.missingScopes ?? findMissingScopes(granted.scopes, asked);
    const types = neededTypes(centre);
    const uncovered = types.filter((t) =>
      neededPermissions(centre, t).some((p) => !scopesAllow(granted.scopes, t, p)),
    );
    const details = [`granted: ${granted.scopes.join(' ') || '(none reported)'}`];
    if (notGranted.length === 0 && uncovered.length === 0)
      return {
        status: 'ok',
        reason: `the pull's reads and searches are granted for ${types.join(', ')}`,
        details,
      };
    const problems: string[] = [];
    const readOnly = uncovered.filter((t) => !neededPermissions(centre, t).includes('s'));
    const readSearch = uncovered.filter((t) => !readOnly.includes(t));
    if (readSearch.length > 0) problems.push(`no read+search scope for: ${readSearch.join(', ')}`);
    if (readOnly.length > 0) problems.push(`no read scope for: ${readOnly.join(', ')}`);
    // Asked-for scopes not granted, beyond the types already named above.
    const otherNotGranted = notGranted.filter((s) => !uncovered.some((t) => s.includes(`/${t}.`)));
    if (otherNotGranted.length > 0)
      problems.push(`asked but not granted: ${otherNotGranted.join(' ')}`);
    // Suggest scopes in the form the centre file already uses (an EHR often knows only one).
    const v1 = usesV1Scopes(asked);
    const scopeFor = (t: string) =>
      `system/${t}.${v1 ? 'read' : neededPermissions(centre, t).includes('s') ? 'rs' : 'r'}`;
    const toGrant = [...new Set([...uncovered.map(scopeFor), ...notGranted])];
    return {
      status: 'failed',
      reason: problems.join('; '),
      hint:
        `Ask centre IT to grant client "${centre.auth.clientId}": ${toGrant.join(' ')}` +
        (v1 ? '' : ' (SMART v1 equivalents such as system/Observation.read work too)') +
        ', or adjust auth.scopes in the centre file.',
      details,
    };
  });

  // 4. CapabilityStatement.
  await run('capabilities', 'CapabilityStatement', true, async () => {
    const statement = await client.capabilities(signalOpt);
    return judgeCapabilities(statement, centre);
  });

  // 5. Cohort: the Group is readable, or the roster resolves.
  let patientId: string | undefined;
  const cohortStep = await run('cohort', 'Cohort', true, async () => {
    if ('group' in centre.cohort) {
      // A Group without active Patient members throws CohortError (what it holds, a hint).
      const cohort = await resolveCohort(client, centre, signalOpt);
      patientId = cohort.patientIds[0];
      return {
        status: 'ok',
        reason: `Group "${centre.cohort.group}" lists ${cohort.patientIds.length} active patient(s)`,
        ...(cohort.skippedMembers > 0
          ? { details: [`${cohort.skippedMembers} member(s) skipped (inactive or not a Patient)`] }
          : {}),
      };
    }
    const cohort = await resolveCohort(client, centre, { ...signalOpt, limit: 3 });
    patientId = cohort.patientIds[0];
    const problems = cohort.unresolved.map((u) => `roster line ${u.line}: ${u.reason}`);
    if (!patientId)
      return {
        status: 'failed',
        reason: 'no roster line resolved to a patient',
        hint: 'Check the identifier system in the roster (system|value, one per line) with centre IT: it must be the system the EHR uses for Patient.identifier.',
        ...(problems.length > 0 ? { details: problems } : {}),
      };
    return {
      status: 'ok',
      reason: `roster resolves (${cohort.patientIds.length} of the first lines checked found a patient)`,
      ...(problems.length > 0 ? { details: problems } : {}),
    };
  });

  if (cohortStep.status !== 'ok' || !patientId) {
    skipDataSteps(centre, skip, 'needs a cohort patient');
    return finish();
  }
  const samplePatient = patientId;

  // 6. Data access: one search per type for one patient, or a bulk kick-off.
  if (centre.pull.mode === 'bulk') {
    await run('export', 'Bulk export kick-off', true, async () => {
      // The kick-off a full sync sends: the lookback and pull.searches as _typeFilter.
      const lookback = new Date(Date.now() - centre.pull.firstSyncLookbackDays * 86_400_000);
      const typeFilter = narrowingFilters(
        centre,
        centre.pull.resourceTypes,
        EVENT_RESOURCE_TYPES,
        lookback.toISOString(),
      );
      const {
        statusUrl,
        typeFilterRefused: refusedTypeFilter,
        typesDropped,
        typesUnsupported,
      } = await kickOffNarrowed(
        client,
        (parts) =>
          buildExportUrl(client.baseUrl, centre, {
            resourceTypes: parts.types,
            typeFilter: parts.typeFilter,
          }),
        centre.pull.resourceTypes,
        typeFilter,
        signalOpt,
      );
      const cancelled = await cancelExport(client, statusUrl, logger);
      const hints = [
        ...(typesUnsupported.length > 0
          ? [
              `The EHR does not support exporting ${typesUnsupported.join(', ')} and accepted the export without: remove ${typesUnsupported.join(', ')} from pull.resourceTypes in the centre file${typesUnsupported.includes('MedicationStatement') ? ' (Epic R4 has no MedicationStatement; MedicationRequest carries its medication data)' : ''}.`,
            ]
          : []),
        ...(typesDropped.length > 0
          ? [
              `The EHR refused to export ${typesDropped.join(', ')} (outside the Patient compartment) and accepted the export without: syncs read the referenced ${typesDropped.join(', ')} resources one by one after the export.`,
            ]
          : []),
        ...(refusedTypeFilter
          ? [
              'The EHR refused _typeFilter (HTTP 400) and accepted the export without it: syncs export without narrowing (whole history of Encounters and Observations, every pull.searches type in full) and apply the lookback themselves.',
            ]
          : []),
        ...(cancelled
          ? []
          : [
              "The EHR did not accept DELETE on the status URL; the test export may run to completion. On EHRs that run one export per client at a time (Oracle Health), it blocks the next syncs' exports until it ends: ask centre IT to cancel it, or let it finish before the next sync.",
            ]),
      ];
      return {
        status: 'ok',
        reason: `the EHR accepted the export (202)${[...typesUnsupported, ...typesDropped].length > 0 ? ` without ${[...typesUnsupported, ...typesDropped].join(', ')}` : ''}${refusedTypeFilter ? ' without _typeFilter' : ''} and ${cancelled ? 'the test job was cancelled' : 'could not cancel the test job'}`,
        ...(hints.length > 0 ? { hint: hints.join(' ') } : {}),
      };
    });
  } else {
    let medicationRef: string | undefined;
    for (const type of centre.pull.resourceTypes) {
      if (type === 'Medication') continue;
      for (const extra of searchesOf(centre, type)) {
        // Each configured search is checked on its own (`search:Observation?category=exam`).
        const suffix = extra ? `?${new URLSearchParams(extra).toString()}` : '';
        await run(
          `search:${type}${suffix}`,
          `Search ${type}${suffix} for one cohort patient`,
          true,
          async () => {
            let count = 0;
            let others = 0;
            let total: number | undefined;
            for await (const page of client.searchPages(
              type,
              patientSearchParams(type, samplePatient, { pageSize: 10 }, extra),
              signalOpt,
            )) {
              total = page.total;
              for (const resource of searchMatches(page)) {
                count += 1;
                if (belongsToAnotherPatient(resource, samplePatient)) others += 1;
                else medicationRef ??= medicationReferenceOf(resource);
              }
              break; // the first page is enough to prove access
            }
            return {
              status: 'ok',
              reason:
                `search works: ${count} on the first page` +
                (total !== undefined ? ` (${total} in all)` : ''),
              // Syncs leave such resources out (with a run warning), but each patient's
              // searches then return everyone's data: worth knowing before the first sync.
              ...(others > 0
                ? {
                    hint: `${others} of them belong to another patient: the EHR seems to ignore the ${type === 'Patient' ? '_id' : 'patient'} search parameter. Syncs leave such resources out, but every patient's search would return everyone's data; ask centre IT whether the FHIR server supports it.`,
                  }
                : {}),
            };
          },
        );
      }
    }
    if (centre.pull.resourceTypes.includes('Medication')) {
      if (!medicationRef) {
        skip(
          'read:Medication',
          'Read a referenced Medication',
          false,
          'the sample patient has no medication referencing a Medication resource',
        );
      } else {
        const id = medicationRef;
        await run('read:Medication', 'Read a referenced Medication', true, async () => {
          const medication = await client.read('Medication', id, signalOpt);
          return medication
            ? { status: 'ok', reason: `Medication/${id} is readable` }
            : {
                status: 'failed',
                reason: `Medication/${id} is referenced but not found (404)`,
                hint: 'Ask centre IT whether Medication resources are exposed to this client.',
              };
        });
      }
    }
  }
  return finish();

  // Last: the mapping pack and overrides (local, so checked whatever the EHR answered).
  async function finish(): Promise<CheckReport> {
    const { mappingsDir } = deps;
    if (mappingsDir !== undefined)
      await run('mapping', 'Mapping pack and overrides', true, async (): Promise<StepResult> => {
        const issues = await centreMappingIssues(centre, mappingsDir);
        if (issues.length === 0)
          return {
            status: 'ok',
            reason: `mapping pack "${centre.mapping.pack}" loads${Object.keys(centre.mapping.overrides).length > 0 ? ' and the centre overrides apply to it' : ''}`,
          };
        return {
          status: 'failed',
          reason: `${issues.length} problem${issues.length === 1 ? '' : 's'} in the mapping settings; every sync would fail`,
          hint: `Fix the centre file ${centre.sourceFile} (mapping.pack names a folder of ${resolve(mappingsDir)}, LHN_MAPPINGS_DIR).`,
          details: issues.map((i) => `${i.path}: ${i.message}`),
        };
      });
    return {
      centreId: centre.id,
      centreName: centre.name,
      baseUrl: centre.fhir.baseUrl,
      mode: centre.pull.mode,
      startedAt,
      finishedAt: new Date(now()).toISOString(),
      ok: steps.every((s) => !(s.required && s.status === 'failed')),
      steps,
    };
  }
}

/**
 * The signing key as the EHR will meet it: the file loads as an auth.alg key, the kid it
 * carries (if any) is auth.kid (the kid the assertion names), and, when the keys folder is
 * known, auth.kid is in the JWKS this service publishes with the same public key. Undefined
 * when all is well; `unusable` when no assertion can be signed at all.
 */
async function judgeSigningKey(
  centre: CentreConfig,
  keysDir: string | undefined,
  logger: Logger,
): Promise<{ result: StepResult; unusable: boolean } | undefined> {
  const { kid, privateKeyFile } = centre.auth;
  let loaded;
  try {
    loaded = await loadPrivateKey(privateKeyFile, centre.auth.alg);
  } catch (err) {
    if (!(err instanceof KeyFileError)) throw err;
    return {
      unusable: true,
      result: {
        status: 'failed',
        reason: `key_unusable: ${err.message}`,
        hint: keyUnusableHint(centre),
      },
    };
  }
  if (loaded.fileKid !== undefined && loaded.fileKid !== kid)
    return {
      unusable: false,
      result: {
        status: 'failed',
        reason: `auth.kid "${kid}" is not the kid of the key in auth.privateKeyFile ("${loaded.fileKid}")`,
        hint:
          `The assertion names auth.kid, and the EHR looks the public key up by it. Set auth.kid: ${loaded.fileKid} in ${centre.sourceFile} ` +
          `(the kid \`lhn-bridge keys generate\` printed for this key), or point auth.privateKeyFile at the key registered as "${kid}".`,
      },
    };
  if (keysDir === undefined) return undefined;
  const published = (await buildJwks(keysDir, { logger })).keys.find((k) => k.kid === kid);
  // The EHR is told to fetch a JWKS URL (jku): then the published set is what it verifies with.
  const status = centre.auth.jku ? 'failed' : 'ok';
  const pasted = centre.auth.jku
    ? ''
    : ' If the EHR holds a pasted copy of the JWKS instead of our JWKS URL, this does not matter.';
  if (!published)
    return {
      unusable: false,
      result: {
        status,
        reason: `kid ${kid} is not in the JWKS this service publishes (keysDir ${keysDir})`,
        hint:
          `An EHR that fetches our JWKS URL (/.well-known/jwks.json) cannot find the key that signs this centre's assertions. ` +
          `Keep the key file in ${keysDir} (\`lhn-bridge keys generate --centre ${centre.id}\` writes it there), or put its public JWK there as <name>.public.jwk.json; check with \`lhn-bridge keys jwks\`.${pasted}`,
      },
    };
  if ((await thumbprintKid(published)) !== (await thumbprintKid(loaded.publicJwk)))
    return {
      unusable: false,
      result: {
        status,
        reason: `the JWKS this service publishes (keysDir ${keysDir}) has another public key under kid ${kid} than auth.privateKeyFile`,
        hint: `Two different keys carry kid ${kid}: the EHR verifies with the published one and rejects our assertions. Remove the stale key file from ${keysDir} (and retired/), or give auth.privateKeyFile the key that is published.${pasted}`,
      },
    };
  return undefined;
}

/**
 * The SMART permissions the pull uses on a type: the cohort Group is only read, and so is
 * Medication in search mode (read by reference); everything else is searched and read.
 */
function neededPermissions(centre: CentreConfig, type: string): ('r' | 's')[] {
  if (type === 'Group') return ['r'];
  if (type === 'Medication' && centre.pull.mode !== 'bulk') return ['r'];
  return ['r', 's'];
}

/** True when every resource scope in `scopes` uses the SMART v1 form (.read/.write/.*). */
function usesV1Scopes(scopes: readonly string[]): boolean {
  const resourceScopes = scopes.filter((s) => /^(system|user|patient)\//.test(s));
  return (
    resourceScopes.length > 0 && resourceScopes.every((s) => /\.(read|write|\*)(\?.*)?$/.test(s))
  );
}

/** Resource types the pull reads, plus Group for a Group cohort. */
function neededTypes(centre: CentreConfig): string[] {
  const types: string[] = [...centre.pull.resourceTypes];
  if ('group' in centre.cohort) types.push('Group');
  else if (!types.includes('Patient')) types.push('Patient');
  return types;
}

function skipDataSteps(
  centre: CentreConfig,
  skip: (id: string, title: string, required: boolean, reason: string) => void,
  reason: string,
): void {
  if (centre.pull.mode === 'bulk') skip('export', 'Bulk export kick-off', true, reason);
  else
    for (const type of centre.pull.resourceTypes)
      if (type !== 'Medication')
        skip(`search:${type}`, `Search ${type} for one cohort patient`, true, reason);
}

function medicationReferenceOf(resource: FhirResource): string | undefined {
  if (
    resource.resourceType !== 'MedicationRequest' &&
    resource.resourceType !== 'MedicationStatement'
  )
    return undefined;
  const ref = (resource.medicationReference as { reference?: string } | undefined)?.reference;
  const m = ref ? /(?:^|\/)Medication\/([A-Za-z0-9\-.]{1,64})$/.exec(ref) : null;
  return m?.[1];
}

/**
 * What to do about configured types the EHR does not serve: they cannot be "exposed" when the
 * EHR has no such API (Epic R4 has no MedicationStatement), so leave them out.
 */
function removeTypesHint(types: readonly string[]): string {
  return (
    `If the EHR has no ${types.join(', ')} API, remove ${types.join(', ')} from pull.resourceTypes in the centre file (syncs skip a type the CapabilityStatement does not list, with a warning)` +
    (types.includes('MedicationStatement')
      ? '. Epic R4 has no MedicationStatement: MedicationRequest carries its medication data (medication lists and patient-reported medications), so steroid use still comes through.'
      : '.')
  );
}

/** FHIR version, resource types, search parameters and (bulk) the export operation. */
function judgeCapabilities(statement: FhirResource, centre: CentreConfig): StepResult {
  const version = typeof statement.fhirVersion === 'string' ? statement.fhirVersion : undefined;
  const tool = new CapabilityTool(statement);
  const details: string[] = [];
  const problems: string[] = [];
  const unlistedPullTypes: string[] = [];
  if (!version || !version.startsWith('4.0.'))
    problems.push(`FHIR version ${version ?? '(not stated)'} is not R4 (4.0.x)`);
  const server = tool.serverCapabilities();
  if (!server) problems.push('no server-mode rest entry');
  else {
    const needsSearch = (t: string) => t !== 'Medication' || centre.pull.mode === 'bulk';
    for (const type of neededTypes(centre)) {
      const interactions = tool.interactionsFor({ resourceType: type });
      if (!tool.resourceCapabilities({ resourceType: type })) {
        problems.push(`${type} is not listed`);
        if ((centre.pull.resourceTypes as readonly string[]).includes(type))
          unlistedPullTypes.push(type);
        continue;
      }
      if (type === 'Group' || type === 'Medication') {
        if (interactions.length > 0 && !interactions.includes('read'))
          details.push(`warning: ${type} does not list the read interaction`);
        if (type === 'Group' || !needsSearch(type)) continue;
      }
      if (interactions.length > 0 && !interactions.includes('search-type'))
        problems.push(`${type} does not support search`);
      const params = tool.searchParamsFor({ resourceType: type });
      const wanted = type === 'Patient' ? ['_id'] : ['patient'];
      if ('roster' in centre.cohort && type === 'Patient') wanted.push('identifier');
      const missing = wanted.filter((p) => params.length > 0 && !params.includes(p));
      if (missing.length > 0)
        details.push(`warning: ${type} does not list search parameter(s) ${missing.join(', ')}`);
      const lastUpdated = params.includes('_lastUpdated') || tool.serverSearch('_lastUpdated');
      if (params.length > 0 && !lastUpdated)
        details.push(`note: ${type} does not list _lastUpdated (incremental syncs rely on it)`);
    }
    if (centre.pull.mode === 'bulk') {
      const operations = JSON.stringify([
        server.operation,
        ...(server.resource ?? []).map((r) => r.operation),
      ]);
      if (!/"name":"(export|\$export)"/.test(operations))
        problems.push('no $export operation is advertised');
    }
  }
  if (problems.length > 0)
    return {
      status: 'failed',
      reason: problems.join('; '),
      hint:
        'Check that fhir.baseUrl is the FHIR R4 base of the EHR and ask centre IT to expose ' +
        (centre.pull.mode === 'bulk' ? 'Bulk Data export and ' : '') +
        'these resource types to backend clients.' +
        (unlistedPullTypes.length > 0 ? ` ${removeTypesHint(unlistedPullTypes)}` : ''),
      ...(details.length > 0 ? { details } : {}),
    };
  return {
    status: 'ok',
    reason: `FHIR ${version}; ${neededTypes(centre).join(', ')} supported`,
    ...(details.length > 0 ? { details } : {}),
  };
}

/**
 * An export kick-off answered 429: the Bulk Data IG's answer to a kick-off while another
 * export runs, and Oracle Health runs one export per client application at a time.
 */
function exportInProgressHint(centre: CentreConfig, retryAfterSeconds: number | undefined): string {
  return (
    'The EHR refused the export kick-off as throttled (429): another export is probably still running for this client ' +
    `(Oracle Health runs one export per client at a time): a sync of this centre, an earlier check's test export, or another tool using client id "${centre.auth.clientId}". ` +
    `Run the check again after that export has ended${retryAfterSeconds !== undefined ? ` (the EHR said to retry after ${retryAfterSeconds} s)` : ''}, or ask centre IT to cancel it.`
  );
}

/** Turns an error of any step into a failed result with a hint. */
function describeFailure(err: unknown, centre: CentreConfig): StepResult {
  if (err instanceof SmartAuthError)
    return {
      status: 'failed',
      reason: `${err.code}${err.status !== undefined ? ` (HTTP ${err.status})` : ''}${err.description ? `: ${err.description}` : ''}`,
      hint: err.hint,
    };
  if (err instanceof FhirHttpError) {
    // A type-level search (`[base]/Type?...`) of a configured type.
    const searched = /\/([A-Z][A-Za-z]+)(?:\?|$)/.exec(err.url)?.[1];
    const typeSearched =
      searched && (centre.pull.resourceTypes as readonly string[]).includes(searched)
        ? searched
        : undefined;
    const issues = err.issues.map(
      (i) => `${i.severity} ${i.code}${i.details ? `: ${i.details}` : ''}`,
    );
    const hint =
      err.status === 401
        ? 'The EHR rejected our access token for this request: check that the client is enabled for the FHIR API, not only the token endpoint.'
        : err.status === 403
          ? `The EHR refused access: check the scopes granted to client "${centre.auth.clientId}" and any data-access policy for backend clients.`
          : err.status === 404 && typeSearched !== undefined
            ? `The EHR does not serve ${typeSearched} searches (404). ${removeTypesHint([typeSearched])}`
            : err.status === 404
              ? 'Not found: check fhir.baseUrl and the ids in the centre file.'
              : err.status === 400
                ? 'The EHR rejected the query; the OperationOutcome above says which parameter. Some EHRs need extra parameters for a type (Epic: category or code on Observation): give them as pull.searches in the centre file.'
                : err.status === 429 && err.url.includes('$export')
                  ? exportInProgressHint(centre, err.retryAfterSeconds)
                  : 'The EHR answered with an error; ask centre IT to look it up in the FHIR server log.';
    return {
      status: 'failed',
      reason: `HTTP ${err.status} from ${err.url}`,
      hint,
      ...(issues.length > 0 ? { details: issues } : {}),
    };
  }
  if (err instanceof FhirNetworkError)
    return {
      status: 'failed',
      reason: err.message,
      hint: "Check the network path to the EHR (DNS, firewall allow-list, VPN, proxy) and the EHR's availability.",
    };
  if (err instanceof OriginRefusedError)
    return {
      status: 'failed',
      reason: `the EHR linked to another host (${err.origin}); the token was not sent there`,
      hint:
        err.purpose === 'next-link' || err.purpose === 'bulk-status'
          ? `The EHR builds its ${err.purpose === 'next-link' ? 'paging' : 'export status'} links from a wrong base address (${err.origin} instead of ${err.allowedOrigin}): set the FHIR server's public base URL (HAPI FHIR: hapi.fhir.server_address) or, behind a reverse proxy, forward X-Forwarded-Host and X-Forwarded-Proto.`
          : 'Ask centre IT why export links point to another host than the FHIR base URL.',
    };
  if (err instanceof IncompleteSearchError)
    return {
      status: 'failed',
      reason: err.message,
      hint: 'The EHR said its search result is incomplete (listed issues); syncs fail the same way until it answers in full.',
      details: err.issues.map(describeIssue),
    };
  if (err instanceof CohortError)
    return { status: 'failed', reason: err.message.replace(`. ${err.hint}`, ''), hint: err.hint };
  if (err instanceof MalformedFhirResponseError && err.issues.length > 0)
    return {
      status: 'failed',
      reason: err.message,
      hint: 'The EHR answered with an OperationOutcome instead of results; its issues (listed) say why. Narrow the search with pull.searches if it was too costly, or ask centre IT to look the request up in the FHIR server log.',
      details: err.issues.map((i) => `${i.severity} ${i.code}${i.details ? `: ${i.details}` : ''}`),
    };
  if (err instanceof MalformedFhirResponseError)
    return {
      status: 'failed',
      reason: err.message,
      hint: 'The EHR sent something that is not valid FHIR JSON; check fhir.baseUrl (a proxy or login page?) and ask centre IT.',
    };
  return {
    status: 'failed',
    reason: (err as Error).message ?? String(err),
    hint: 'Unexpected failure; run again with --verbose and report it.',
  };
}

const MARK: Record<CheckStepStatus, string> = { ok: '[ ok ]', failed: '[FAIL]', skipped: '[skip]' };

/** The report as text for a terminal: one line per step, hints and details indented. */
export function formatCheckReport(report: CheckReport): string {
  const lines: string[] = [
    `lhn-bridge check: centre "${report.centreId}" (${report.centreName})`,
    `FHIR base ${report.baseUrl}, pull mode ${report.mode}`,
    '',
  ];
  report.steps.forEach((step, index) => {
    const optional = step.required ? '' : ' (optional)';
    lines.push(`${MARK[step.status]} ${index + 1}. ${step.title}${optional}: ${step.reason}`);
    for (const detail of step.details ?? []) lines.push(`         - ${detail}`);
    // An ok step's hint is a caveat (the EHR refused _typeFilter, a test export could not
    // be cancelled): centre IT must see it too.
    if (step.hint) lines.push(`         ${step.status === 'ok' ? 'note' : 'hint'}: ${step.hint}`);
  });
  const failed = report.steps.filter((s) => s.required && s.status === 'failed').length;
  const passed = report.steps.filter((s) => s.status === 'ok').length;
  lines.push('');
  lines.push(
    failed === 0
      ? `Result: OK (${passed} of ${report.steps.length} steps passed)`
      : `Result: FAILED (${failed} required step${failed === 1 ? '' : 's'} failed)`,
  );
  return `${lines.join('\n')}\n`;
}
