// The sandbox EHR: a real FHIR R4 server on loopback for the demo and the tests. It speaks
// SMART Backend Services (discovery, private_key_jwt token endpoint), FHIR search and read,
// and Bulk Data $export, checks the bearer token and its scopes on every data request, and
// can misbehave on demand (faults.ts). Never used on a production path.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { silentLogger, type Logger } from '../../util/logger.js';
import { scopesAllow } from '../../auth/scopes.js';
import {
  OAuthError,
  SandboxAuthServer,
  type IssuedToken,
  type RegisterClientOptions,
} from './auth-server.js';
import { EXPORT_TYPES, ExportJobs, type ExportJob } from './bulk.js';
import { FaultSwitches, type RequestKind, type SandboxFaultSettings } from './faults.js';
import {
  countMatches,
  parseDateRange,
  parseSearch,
  SEARCH_PARAMS,
  SearchError,
  searchPage,
  SUPPORTED_TYPES,
  type SearchQuery,
} from './search.js';
import { referenceId, ResourceStore, type SandboxResource } from './store.js';

export type { RegisterClientOptions } from './auth-server.js';
export type { RequestKind, SandboxFaultSettings } from './faults.js';
export type { SandboxResource } from './store.js';
export { FaultSwitches } from './faults.js';

export interface StartSandboxEhrOptions {
  /** Initial resources; their meta.versionId / meta.lastUpdated are kept when present. */
  resources?: Iterable<SandboxResource>;
  /** Clients registered at start. */
  clients?: RegisterClientOptions[];
  /** Port to listen on (default 0: any free port). */
  port?: number;
  /** Host to bind (default 127.0.0.1). */
  host?: string;
  logger?: Logger;
  /** Lifetime of issued tokens in seconds (default 300). */
  tokenLifetimeSeconds?: number;
  /** The server's clock (epoch ms; default Date.now); the Date header follows it. */
  now?: () => number;
  /** Signing algorithms the token endpoint accepts (default ES384, RS384). */
  supportedAlgs?: string[];
  /** Status polls answered 202 before a finished export says 200 (default 1). */
  exportPollsBeforeDone?: number;
  /** Retry-After on 202 status answers, in seconds (default 1). */
  exportRetryAfterSeconds?: number;
  /** Lines per NDJSON file before a new file starts (default 50,000). */
  exportMaxLinesPerFile?: number;
}

/** One request the sandbox saw (no tokens, no bodies). */
export interface SandboxRequestRecord {
  method: string;
  /** Path and query string. */
  url: string;
  kind: RequestKind;
  resourceType: string | undefined;
  status: number;
  /** True when the request carried an Authorization header. */
  authorized: boolean;
}

/** Counters tests assert load with. */
export interface SandboxStats {
  requests: number;
  byKind: Record<string, number>;
  /** Reads and searches by resource type. */
  byType: Record<string, number>;
  byStatus: Record<string, number>;
  tokensIssued: number;
}

/** A running sandbox EHR. */
export interface SandboxEhr {
  /** FHIR base URL, e.g. http://127.0.0.1:PORT/fhir */
  baseUrl: string;
  /** http://127.0.0.1:PORT */
  origin: string;
  tokenUrl: string;
  registerClient(registration: RegisterClientOptions): void;
  faults: FaultSwitches;
  /** Stores a resource as a new version (versionId + 1, lastUpdated now); returns its meta. */
  upsert(resource: SandboxResource): { versionId: string; lastUpdated: string };
  /** Deletes a resource (recorded for Bulk Data `deleted`); false if it did not exist. */
  delete(type: string, id: string): boolean;
  /** The stored resource, parsed (tests). */
  get(type: string, id: string): Record<string, unknown> | undefined;
  /** Live resources stored (of a type, or all). */
  count(type?: string): number;
  stats: SandboxStats;
  /** The most recent requests (up to 10,000). */
  requests: SandboxRequestRecord[];
  resetStats(): void;
  close(): Promise<void>;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_LOG = 10_000;

function outcome(code: string, diagnostics: string, severity = 'error'): string {
  return JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [{ severity, code, diagnostics }],
  });
}

function retryAfterHeader(value: number | string | undefined): string | undefined {
  return value === undefined ? undefined : String(value);
}

async function readBody(req: IncomingMessage, limit = 1_000_000): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new Error('request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Starts a sandbox EHR; resolves once it listens. */
export async function startSandboxEhr(options: StartSandboxEhrOptions = {}): Promise<SandboxEhr> {
  const logger = (options.logger ?? silentLogger).child({ component: 'sandbox-ehr' });
  const now = options.now ?? Date.now;
  const host = options.host ?? '127.0.0.1';
  const store = new ResourceStore(now);
  for (const resource of options.resources ?? []) store.put(resource, true);
  const faults = new FaultSwitches();
  /** Jobs' end as transactionTime (faults.transactionTimeAtEnd), fixed once reported. */
  const endedAt = new WeakMap<object, string>();
  const jobs = new ExportJobs(store, options.exportMaxLinesPerFile ?? 50_000);
  const pollsBeforeDone = options.exportPollsBeforeDone ?? 1;
  const exportRetryAfter = options.exportRetryAfterSeconds ?? 1;

  const stats: SandboxStats = {
    requests: 0,
    byKind: {},
    byType: {},
    byStatus: {},
    tokensIssued: 0,
  };
  const requestLog: SandboxRequestRecord[] = [];

  // Filled in once listening (the port is needed for URLs).
  let origin = '';
  let baseUrl = '';
  const auth = new SandboxAuthServer({
    tokenUrl: () => `${origin}/auth/token`,
    now,
    supportedAlgs: options.supportedAlgs ?? ['ES384', 'RS384'],
    defaultTokenLifetimeSeconds: options.tokenLifetimeSeconds ?? 300,
  });
  for (const client of options.clients ?? []) auth.registerClient(client);

  function send(
    res: ServerResponse,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    res.writeHead(status, { 'content-type': FHIR_JSON, ...headers });
    res.end(body);
  }

  function smartConfiguration(): string {
    return JSON.stringify({
      issuer: origin,
      token_endpoint: `${origin}/auth/token`,
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: options.supportedAlgs ?? ['ES384', 'RS384'],
      grant_types_supported: ['client_credentials'],
      scopes_supported: [
        'system/*.read',
        'system/*.rs',
        ...SUPPORTED_TYPES.flatMap((t) => [`system/${t}.read`, `system/${t}.rs`]),
      ],
      capabilities: ['client-confidential-asymmetric'],
    });
  }

  function capabilityStatement(): string {
    return JSON.stringify({
      resourceType: 'CapabilityStatement',
      status: 'active',
      date: new Date(now()).toISOString(),
      kind: 'instance',
      fhirVersion: '4.0.1',
      format: ['application/fhir+json'],
      software: { name: 'lhn-bridge sandbox EHR' },
      implementation: { description: 'lhn-bridge sandbox EHR', url: baseUrl },
      instantiates: ['http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data'],
      rest: [
        {
          mode: 'server',
          security: {
            extension: [
              {
                url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
                extension: [{ url: 'token', valueUri: `${origin}/auth/token` }],
              },
            ],
            service: [
              {
                coding: [
                  {
                    system: 'http://terminology.hl7.org/CodeSystem/restful-security-service',
                    code: 'SMART-on-FHIR',
                  },
                ],
              },
            ],
          },
          resource: SUPPORTED_TYPES.filter(
            (type) =>
              !(faults.live.unsupportedTypes ?? []).includes(type) &&
              !(faults.live.capabilityOmitsTypes ?? []).includes(type),
          ).map((type) => ({
            type,
            interaction: [{ code: 'read' }, { code: 'search-type' }],
            searchParam: ['_id', '_lastUpdated', ...(SEARCH_PARAMS[type] ?? [])].map((name) => ({
              name,
              type:
                name === '_lastUpdated'
                  ? 'date'
                  : name === 'patient' || name === 'subject'
                    ? 'reference'
                    : 'token',
            })),
            ...(type === 'MedicationRequest' || type === 'MedicationStatement'
              ? { searchInclude: [`${type}:medication`] }
              : {}),
            ...(type === 'Group' || type === 'Patient'
              ? {
                  operation: [
                    {
                      name: 'export',
                      definition:
                        type === 'Group'
                          ? 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export'
                          : 'http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export',
                    },
                  ],
                }
              : {}),
          })),
        },
      ],
    });
  }

  /** Checks the bearer token; answers 401 itself and returns undefined when it is not valid. */
  function authorize(req: IncomingMessage, res: ServerResponse): IssuedToken | undefined {
    const header = req.headers.authorization;
    const m = header ? /^Bearer\s+(\S+)$/i.exec(header) : null;
    if (!m) {
      send(res, 401, outcome('login', 'a bearer token is required'), {
        'www-authenticate': 'Bearer realm="sandbox-ehr"',
      });
      return undefined;
    }
    const result = auth.checkToken(m[1]!);
    if ('invalid' in result) {
      send(res, 401, outcome('expired', result.invalid), {
        'www-authenticate': `Bearer realm="sandbox-ehr", error="invalid_token", error_description="${result.invalid}"`,
      });
      return undefined;
    }
    return result;
  }

  function forbid(res: ServerResponse, what: string): void {
    send(res, 403, outcome('forbidden', `the token's scopes do not allow ${what}`), {
      'www-authenticate': 'Bearer realm="sandbox-ehr", error="insufficient_scope"',
    });
  }

  async function handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const json = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    if (req.method !== 'POST') {
      res.writeHead(405, { ...json, allow: 'POST' });
      res.end(JSON.stringify({ error: 'invalid_request', error_description: 'use POST' }));
      return;
    }
    const injected = faults.takeTokenError();
    if (injected) {
      res.writeHead(injected.status ?? 400, json);
      res.end(
        JSON.stringify({
          error: injected.error,
          error_description: injected.description ?? 'injected fault',
        }),
      );
      return;
    }
    try {
      const form = new URLSearchParams(await readBody(req));
      const live = faults.live;
      const body = await auth.issueToken(
        form,
        live.tokenLifetimeSeconds ?? options.tokenLifetimeSeconds,
        live.omitExpiresIn ?? false,
      );
      stats.tokensIssued++;
      res.writeHead(200, json);
      res.end(JSON.stringify(body));
    } catch (err) {
      const e =
        err instanceof OAuthError
          ? err
          : new OAuthError(400, 'invalid_request', (err as Error).message);
      res.writeHead(e.status, json);
      res.end(JSON.stringify({ error: e.error, error_description: e.description }));
    }
  }

  function pageLink(type: string, params: URLSearchParams, cursor: number, page: number): string {
    const next = new URLSearchParams(params);
    next.delete('_page_token');
    next.set('_page_token', `${cursor}.${page}`);
    const linkOrigin = faults.live.foreignNextLink?.origin ?? origin;
    return `${linkOrigin}${new URL(baseUrl).pathname}/${type}?${next.toString()}`;
  }

  function writeSearchBundle(
    res: ServerResponse,
    query: SearchQuery,
    params: URLSearchParams,
    from: number,
    page: number,
    token: IssuedToken,
  ): void {
    const malformed = faults.takeMalformedPage(page, query.type);
    if (malformed === 'invalid-json') {
      send(res, 200, '{"resourceType":"Bundle","type":"searchset","entry":[{"resource":');
      return;
    }
    if (malformed === 'not-bundle') {
      send(res, 200, JSON.stringify({ resourceType: 'Parameters', parameter: [] }));
      return;
    }
    const self = `${baseUrl}/${query.type}?${params.toString()}`;
    if (query.summaryCount || query.count === 0) {
      const total = countMatches(store, query);
      send(
        res,
        200,
        JSON.stringify({
          resourceType: 'Bundle',
          type: 'searchset',
          total,
          link: [{ relation: 'self', url: self }],
        }),
      );
      return;
    }
    const result = searchPage(store, query, from);
    const links = [{ relation: 'self', url: self }];
    if (result.nextCursor !== undefined)
      links.push({
        relation: 'next',
        url: pageLink(query.type, params, result.nextCursor, page + 1),
      });
    const head: Record<string, unknown> = { resourceType: 'Bundle', type: 'searchset' };
    if (query.total) head.total = countMatches(store, query);
    head.link = links;
    res.writeHead(200, { 'content-type': FHIR_JSON });
    // A page can hold 1,000 resources: stream it in ~64 KB chunks rather than building one
    // string or writing once per entry.
    let buffered = `${JSON.stringify(head).slice(0, -1)},"entry":[`;
    const emit = (text: string) => {
      buffered += text;
      if (buffered.length >= 65_536) {
        res.write(buffered);
        buffered = '';
      }
    };
    let first = true;
    const included = new Set<string>();
    const canIncludeMedication = scopesAllow(token.scopes, 'Medication', 'r');
    const omitMeta = faults.live.omitMeta === true;
    const notice = faults.live.searchOutcome;
    const addNotice = notice && (!notice.resourceType || notice.resourceType === query.type);
    const entries =
      addNotice && notice.keepEntries !== undefined
        ? result.entries.slice(0, notice.keepEntries)
        : result.entries;
    for (const entry of entries) {
      const json = omitMeta ? withoutMeta(entry.json) : entry.json;
      emit(
        `${first ? '' : ','}{"fullUrl":"${baseUrl}/${entry.type}/${entry.id}","resource":${json},"search":{"mode":"match"}}`,
      );
      first = false;
      if (query.includeMedication && entry.medicationId && canIncludeMedication)
        included.add(entry.medicationId);
    }
    for (const id of included) {
      const med = store.get('Medication', id);
      if (med)
        emit(
          `,{"fullUrl":"${baseUrl}/Medication/${id}","resource":${med.json},"search":{"mode":"include"}}`,
        );
    }
    if (addNotice) {
      emit(
        `${first ? '' : ','}{"resource":${JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: notice.severity, code: notice.code, details: { text: notice.text } }] })},"search":{"mode":"outcome"}}`,
      );
      first = false;
    }
    if (query.ignored.length > 0)
      emit(
        `${first ? '' : ','}{"resource":${outcome('not-supported', `ignored search parameters: ${query.ignored.join(', ')}`, 'warning')},"search":{"mode":"outcome"}}`,
      );
    res.end(`${buffered}]}`);
  }

  async function handleSearch(
    req: IncomingMessage,
    res: ServerResponse,
    type: string,
    url: URL,
    token: IssuedToken,
  ): Promise<void> {
    if (!scopesAllow(token.scopes, type, 's')) return forbid(res, `searching ${type}`);
    const params = new URLSearchParams(url.searchParams);
    if (req.method === 'POST') {
      for (const [k, v] of new URLSearchParams(await readBody(req))) params.append(k, v);
    }
    const strict = /handling=strict/i.test(String(req.headers.prefer ?? ''));
    let from = 0;
    let page = 1;
    const pageToken = params.get('_page_token');
    if (pageToken !== null) {
      const m = /^(\d+)\.(\d+)$/.exec(pageToken);
      if (!m) return send(res, 400, outcome('invalid', 'invalid _page_token'));
      from = faults.live.stuckPaging ? 0 : Number(m[1]);
      page = Number(m[2]);
    }
    const restricted = faults.live.restrictedPatients;
    if (
      restricted &&
      (restricted.resourceType === undefined || restricted.resourceType === type) &&
      [type === 'Patient' ? '_id' : 'patient', 'subject']
        .flatMap((name) => params.getAll(name))
        .some((v) => restricted.ids.includes(v.replace(/^Patient\//, '')))
    )
      return send(
        res,
        restricted.status ?? 403,
        JSON.stringify({
          resourceType: 'OperationOutcome',
          issue: [
            {
              severity: 'fatal',
              code: 'security',
              details: {
                coding: [
                  {
                    system: 'urn:oid:1.2.840.114350.1.13.0.1.7.2.657369',
                    code: '4118',
                    display: 'User not authorized for request.',
                  },
                ],
              },
            },
          ],
        }),
      );
    for (const name of faults.live.ignoreSearchParams ?? []) params.delete(name);
    const required = faults.live.requireSearchParams?.[type];
    if (
      required &&
      !required.some((name) => [...params.keys()].some((k) => k.split(':')[0] === name))
    )
      return send(
        res,
        400,
        outcome(
          'required',
          `a ${type} search needs one of these parameters: ${required.join(', ')}`,
        ),
      );
    let query: SearchQuery;
    try {
      query = parseSearch(type, params, strict);
    } catch (err) {
      if (err instanceof SearchError) return send(res, err.status, outcome('invalid', err.message));
      throw err;
    }
    const forSelf = new URLSearchParams(params);
    forSelf.delete('_page_token');
    writeSearchBundle(res, query, forSelf, from, page, token);
  }

  function handleRead(res: ServerResponse, type: string, id: string, token: IssuedToken): void {
    if (!scopesAllow(token.scopes, type, 'r')) return forbid(res, `reading ${type}`);
    const entry = store.get(type, id);
    if (!entry) {
      if (store.wasDeleted(type, id))
        return send(res, 410, outcome('deleted', `${type}/${id} was deleted`));
      return send(res, 404, outcome('not-found', `${type}/${id} is not known`));
    }
    send(res, 200, entry.json, {
      etag: `W/"${entry.versionId}"`,
      'last-modified': new Date(entry.lastUpdated).toUTCString(),
    });
  }

  function groupMembers(groupId: string): string[] | undefined {
    const group = store.get('Group', groupId);
    if (!group) return undefined;
    const parsed = JSON.parse(group.json) as {
      member?: { entity?: { reference?: string }; inactive?: boolean }[];
    };
    const ids: string[] = [];
    for (const m of parsed.member ?? []) {
      const ref = m.entity?.reference;
      const id = typeof ref === 'string' && !m.inactive ? referenceId(ref, 'Patient') : undefined;
      if (id) ids.push(id);
    }
    return ids;
  }

  function handleKickOff(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    groupId: string | undefined,
    token: IssuedToken,
  ): void {
    const prefer = String(req.headers.prefer ?? '');
    if (!/respond-async/i.test(prefer))
      return send(
        res,
        400,
        outcome('invalid', 'Bulk Data kick-off requires the header Prefer: respond-async'),
      );
    const accept = String(req.headers.accept ?? 'application/fhir+json');
    if (!/application\/fhir\+json|\*\/\*|application\/json/.test(accept))
      return send(res, 400, outcome('invalid', 'Accept must be application/fhir+json'));
    const format = url.searchParams.get('_outputFormat');
    if (format && !['application/fhir+ndjson', 'application/ndjson', 'ndjson'].includes(format))
      return send(res, 400, outcome('not-supported', `_outputFormat ${format} is not supported`));
    const typeParam = url.searchParams
      .getAll('_type')
      .flatMap((v) => v.split(','))
      .map((t) => t.trim())
      .filter(Boolean);
    const unknown = typeParam.filter(
      (t) =>
        !EXPORT_TYPES.includes(t) ||
        (faults.live.unsupportedTypes ?? []).includes(t) ||
        (faults.live.exportUnsupportedTypes ?? []).includes(t),
    );
    if (unknown.length > 0)
      return send(res, 400, outcome('not-supported', `_type not supported: ${unknown.join(', ')}`));
    if (faults.live.nonCompartmentTypes === 'reject' && typeParam.includes('Medication'))
      return send(
        res,
        400,
        outcome(
          'processing',
          'Resource types [Medication] are invalid for this type of export, as they do not contain search parameters that refer to patients',
        ),
      );
    const notAllowed = typeParam.filter((t) => !scopesAllow(token.scopes, t, 'r'));
    if (notAllowed.length > 0) return forbid(res, `exporting ${notAllowed.join(', ')}`);
    const types =
      typeParam.length > 0
        ? typeParam
        : EXPORT_TYPES.filter(
            (t) =>
              scopesAllow(token.scopes, t, 'r') &&
              !(faults.live.unsupportedTypes ?? []).includes(t) &&
              !(faults.live.exportUnsupportedTypes ?? []).includes(t),
          );
    const sinceRaw = url.searchParams.get('_since');
    let since: number | undefined;
    if (sinceRaw) {
      const range = parseDateRange(sinceRaw);
      if (!range)
        return send(res, 400, outcome('invalid', `_since "${sinceRaw}" is not a FHIR instant`));
      since = range.start;
    }
    let patients: string[] | undefined;
    if (groupId !== undefined) {
      if (!scopesAllow(token.scopes, 'Group', 'r') && !scopesAllow(token.scopes, 'Patient', 'r'))
        return forbid(res, 'reading the Group');
      patients = groupMembers(groupId);
      if (!patients) return send(res, 404, outcome('not-found', `Group/${groupId} is not known`));
      if (faults.live.exportIgnoresGroup) patients = undefined;
    }
    const typeFilterMode = faults.live.typeFilter;
    if (typeFilterMode === 'reject' && url.searchParams.has('_typeFilter'))
      return send(res, 400, outcome('not-supported', '_typeFilter is not supported'));
    if (typeFilterMode === 'reject-invalid' && url.searchParams.has('_typeFilter'))
      return send(
        res,
        400,
        outcome(
          'invalid',
          `Invalid _typeFilter value: ${url.searchParams.get('_typeFilter')!.split(',')[0]} (unknown search parameter)`,
        ),
      );
    // One comma-delimited value (Bulk Data v1.0.1, Oracle) or repeated parameters (v2); a
    // query's own commas arrive URL-encoded (%2C), so each comma before `Type?` starts a query.
    const typeFilterValues = url.searchParams.getAll('_typeFilter');
    const typeFilters =
      typeFilterMode === 'ignore'
        ? []
        : (typeFilterMode === 'first-only'
            ? typeFilterValues.slice(0, 1)
            : typeFilterValues
          ).flatMap((v) => v.split(/,(?=[A-Z][A-Za-z]+\?)/));
    const job = jobs.start({
      clientId: token.clientId,
      request: `${origin}${url.pathname}${url.search}`,
      patients,
      types,
      since,
      typeFilters,
      transactionMs: store.stamp(),
    });
    logger.debug({ jobId: job.id, types: types.length }, 'bulk export started');
    res.writeHead(202, {
      'content-location': `${baseUrl}/bulkstatus/${job.id}`,
      'content-type': FHIR_JSON,
    });
    res.end(outcome('informational', 'export started', 'information'));
  }

  function manifest(job: ExportJob): string {
    const fileFault = faults.live.fileUrls;
    const fileOrigin = fileFault?.origin ?? origin;
    const filesBase = `${fileOrigin}${new URL(baseUrl).pathname}/bulkfiles/${job.id}`;
    let n = 0;
    const entries = (files: typeof job.files) =>
      files.map((f) => ({
        type: f.type,
        url: `${filesBase}/${n++}.ndjson`,
        count: f.lines.length,
      }));
    const notices = faults.live.exportNotices;
    if (notices && !job.errors.some((f) => f.notices)) {
      job.errors.push({
        type: 'OperationOutcome',
        notices: true,
        lines: notices.map((n) =>
          JSON.stringify({
            resourceType: 'OperationOutcome',
            issue: [{ severity: n.severity, code: 'informational', diagnostics: n.text }],
          }),
        ),
      });
    }
    if (faults.live.transactionTimeAtEnd)
      endedAt.set(job, endedAt.get(job) ?? new Date().toISOString());
    return JSON.stringify({
      transactionTime: endedAt.get(job) ?? job.transactionTime,
      request: job.request,
      requiresAccessToken: fileFault?.requiresAccessToken ?? true,
      output: entries(job.files),
      error: entries(job.errors),
      deleted: entries(job.deleted),
    });
  }

  function handleStatus(
    req: IncomingMessage,
    res: ServerResponse,
    jobId: string,
    token: IssuedToken,
  ): void {
    const job = jobs.jobs.get(jobId);
    if (!job || job.clientId !== token.clientId)
      return send(
        res,
        404,
        outcome(
          'not-found',
          'no such export job (finished and deleted, cancelled, or never started)',
        ),
      );
    if (req.method === 'DELETE') {
      if (faults.live.refuseExportCancel)
        return send(res, 405, outcome('not-supported', 'export jobs cannot be cancelled'));
      jobs.cancel(jobId);
      return send(res, 202, outcome('informational', 'export cancelled', 'information'));
    }
    const pollError = faults.takeStatusPollError();
    if (pollError !== undefined)
      return send(res, pollError, outcome('transient', 'injected status poll error'));
    if (job.status === 'failed')
      return send(
        res,
        500,
        outcome('exception', `the export failed: ${job.failure ?? 'unknown error'}`),
      );
    const failure = faults.live.exportFailure;
    if (failure)
      return send(
        res,
        500,
        outcome('exception', failure.message ?? 'the export failed (injected fault)'),
      );
    if (job.status !== 'complete' || job.polls < pollsBeforeDone) {
      job.polls++;
      res.writeHead(202, {
        'x-progress': `${Math.round(job.progress * 100)}% of types`,
        'retry-after': String(exportRetryAfter),
      });
      res.end();
      return;
    }
    send(res, 200, manifest(job), {
      'content-type': 'application/json',
      expires: new Date(now() + 3_600_000).toUTCString(),
    });
  }

  function handleFile(
    res: ServerResponse,
    jobId: string,
    index: number,
    token: IssuedToken | undefined,
  ): void {
    const job = jobs.jobs.get(jobId);
    const all = job ? [...job.files, ...job.errors, ...job.deleted] : [];
    const file = all[index];
    if (!job || !file || (token && job.clientId !== token.clientId))
      return send(res, 404, outcome('not-found', 'no such export file'));
    res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
    let i = 0;
    const cut = faults.live.truncateExportFile;
    const end =
      cut && cut.resourceType === file.type && job.files.includes(file)
        ? Math.min(cut.keepLines, file.lines.length)
        : file.lines.length;
    // Lines go out in ~64 KB chunks (one write per line is slow), honouring backpressure.
    const pump = () => {
      while (i < end) {
        let chunk = '';
        while (i < end && chunk.length < 65_536) chunk += `${file.lines[i++]}\n`;
        const ok = res.write(chunk);
        if (!ok) {
          res.once('drain', pump);
          return;
        }
      }
      res.end();
    };
    pump();
  }

  function classify(
    method: string,
    path: string[],
  ): { kind: RequestKind; resourceType: string | undefined } {
    const [first, second, third] = path;
    if (
      path.join('/') === '.well-known/smart-configuration' ||
      path.join('/') === 'fhir/.well-known/smart-configuration'
    )
      return { kind: 'discovery', resourceType: undefined };
    if (first === 'auth' && second === 'token') return { kind: 'token', resourceType: undefined };
    if (first !== 'fhir') return { kind: 'other', resourceType: undefined };
    if (second === 'metadata') return { kind: 'metadata', resourceType: undefined };
    if (second === 'bulkstatus') return { kind: 'status', resourceType: undefined };
    if (second === 'bulkfiles') return { kind: 'file', resourceType: undefined };
    if (path[path.length - 1] === '$export') return { kind: 'export', resourceType: second };
    if (second && (third === undefined || third === '_search'))
      return { kind: 'search', resourceType: second };
    if (second && third && path.length === 3) return { kind: 'read', resourceType: second };
    void method;
    return { kind: 'other', resourceType: second };
  }

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    path: string[],
    kind: RequestKind,
    resourceType: string | undefined,
  ): Promise<void> {
    const method = req.method ?? 'GET';
    switch (kind) {
      case 'discovery':
        return send(res, 200, smartConfiguration(), {
          'content-type': 'application/json',
          'cache-control': 'public, max-age=60',
        });
      case 'token':
        return handleToken(req, res);
      case 'metadata':
        return send(res, 200, capabilityStatement());
      case 'other':
        return send(res, 404, outcome('not-supported', `no handler for ${method} ${url.pathname}`));
      case 'read':
      case 'search':
      case 'export':
      case 'status':
      case 'file':
        break;
    }
    if (kind === 'file' && faults.live.fileUrls?.requiresAccessToken === false)
      return handleFile(res, path[2] ?? '', Number.parseInt(path[3] ?? '', 10), undefined);
    const token = authorize(req, res);
    if (!token) return;
    if (kind === 'status') return handleStatus(req, res, path[2] ?? '', token);
    if (kind === 'file')
      return handleFile(res, path[2] ?? '', Number.parseInt(path[3] ?? '', 10), token);
    if (
      !resourceType ||
      !(SUPPORTED_TYPES as readonly string[]).includes(resourceType) ||
      (faults.live.unsupportedTypes ?? []).includes(resourceType)
    )
      return send(
        res,
        404,
        outcome('not-supported', `resource type ${resourceType ?? '(none)'} is not supported`),
      );
    if (kind === 'export') {
      if (method !== 'GET') return send(res, 405, outcome('not-supported', 'use GET for $export'));
      if (resourceType === 'Patient' && path.length === 3)
        return handleKickOff(req, res, url, undefined, token);
      if (resourceType === 'Group' && path.length === 4)
        return handleKickOff(req, res, url, path[2], token);
      return send(
        res,
        404,
        outcome('not-supported', 'export is available at Patient/$export and Group/[id]/$export'),
      );
    }
    if (kind === 'read') {
      if (method !== 'GET')
        return send(res, 405, outcome('not-supported', `${method} is not supported`));
      if ((faults.live.refuseReads ?? []).includes(resourceType))
        return send(res, 403, outcome('forbidden', `reading ${resourceType} is not allowed`));
      return handleRead(res, resourceType, path[2]!, token);
    }
    if (method !== 'GET' && !(method === 'POST' && path[2] === '_search'))
      return send(res, 405, outcome('not-supported', `${method} is not supported`));
    return handleSearch(req, res, resourceType, url, token);
  }

  function record(entry: SandboxRequestRecord): void {
    stats.requests++;
    stats.byKind[entry.kind] = (stats.byKind[entry.kind] ?? 0) + 1;
    if (entry.resourceType && (entry.kind === 'read' || entry.kind === 'search'))
      stats.byType[entry.resourceType] = (stats.byType[entry.resourceType] ?? 0) + 1;
    requestLog.push(entry);
    if (requestLog.length > MAX_LOG) requestLog.splice(0, requestLog.length - MAX_LOG);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', origin);
    const path = url.pathname
      .split('/')
      .filter((p) => p.length > 0)
      .map(decodeURIComponent);
    const { kind, resourceType } = classify(req.method ?? 'GET', path);
    res.setHeader('date', new Date(now()).toUTCString());
    // Counted when the request arrives and its status when the head is written, both
    // before the client can see the answer, so tests can assert right after a response.
    const entry: SandboxRequestRecord = {
      method: req.method ?? 'GET',
      url: `${url.pathname}${url.search}`,
      kind,
      resourceType,
      status: 0,
      authorized: req.headers.authorization !== undefined,
    };
    record(entry);
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
    res.writeHead = (...args: unknown[]) => {
      entry.status = args[0] as number;
      stats.byStatus[String(entry.status)] = (stats.byStatus[String(entry.status)] ?? 0) + 1;
      return writeHead(...args);
    };
    const slow = faults.live.slow;
    if (
      slow &&
      slow.delayMs > 0 &&
      (slow.kinds ?? ['metadata', 'read', 'search', 'export', 'status', 'file']).includes(kind)
    )
      await new Promise((resolve) => setTimeout(resolve, slow.delayMs));
    const drop = faults.take('dropConnection', kind, resourceType);
    if (drop) {
      res.writeHead(200, { 'content-type': FHIR_JSON });
      res.write('{"resourceType":"Bundle","type":"searchset","entry":[');
      setImmediate(() => req.socket.destroy());
      return;
    }
    for (const [name, status] of [
      ['rateLimit', 429],
      ['unavailable', 503],
    ] as const) {
      const fault = faults.take(name, kind, resourceType);
      if (fault) {
        const retryAfter = retryAfterHeader(fault.retryAfter);
        return send(
          res,
          status,
          outcome(status === 429 ? 'throttled' : 'transient', `injected ${status}`),
          retryAfter ? { 'retry-after': retryAfter } : {},
        );
      }
    }
    return route(req, res, url, path, kind, resourceType);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err: (err as Error).message }, 'sandbox EHR handler failed');
      if (!res.headersSent) send(res, 500, outcome('exception', 'internal error'));
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const hostPart = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  origin = `http://${hostPart}:${address.port}`;
  baseUrl = `${origin}/fhir`;
  logger.info({ baseUrl, resources: store.count() }, 'sandbox EHR listening');

  return {
    baseUrl,
    origin,
    tokenUrl: `${origin}/auth/token`,
    registerClient: (registration) => auth.registerClient(registration),
    faults,
    upsert(resource) {
      const entry = store.put(resource, false);
      return { versionId: entry.versionId, lastUpdated: new Date(entry.lastUpdated).toISOString() };
    },
    delete: (type, id) => store.delete(type, id),
    get(type, id) {
      const entry = store.get(type, id);
      return entry ? (JSON.parse(entry.json) as Record<string, unknown>) : undefined;
    },
    count: (type) => store.count(type),
    stats,
    requests: requestLog,
    resetStats() {
      stats.requests = 0;
      stats.byKind = {};
      stats.byType = {};
      stats.byStatus = {};
      stats.tokensIssued = 0;
      requestLog.length = 0;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}

export type { SandboxFaultSettings as FaultSettings };

/** A resource's JSON without its meta (fault `omitMeta`). */
function withoutMeta(json: string): string {
  const resource = JSON.parse(json) as Record<string, unknown>;
  delete resource.meta;
  return JSON.stringify(resource);
}
