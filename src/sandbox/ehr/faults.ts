// Fault switches for the sandbox EHR: the misbehaviour real EHRs show (rate limits, outages,
// slow answers, dropped connections, short-lived tokens, broken pages, foreign next links,
// absurd Retry-After values) on demand, so the FHIR layer's defences are tested against a
// real HTTP server. Count-based faults apply to the next N matching requests, then stop.

/** What a request to the sandbox was for; faults and counters are keyed by it. */
export type RequestKind =
  'discovery' | 'token' | 'metadata' | 'read' | 'search' | 'export' | 'status' | 'file' | 'other';

/** The FHIR data kinds count-based faults hit by default (not discovery or token). */
export const DATA_KINDS: RequestKind[] = ['metadata', 'read', 'search', 'export', 'status', 'file'];

export interface CountedFault {
  /** How many more matching requests get this fault. */
  count: number;
  /** Which kinds of request it hits (default: DATA_KINDS). */
  kinds?: RequestKind[];
  /** Only requests for this resource type (read / search). */
  resourceType?: string;
}

export interface RetryFault extends CountedFault {
  /** Retry-After value: seconds (number or numeric string) or an HTTP-date string. */
  retryAfter?: number | string;
}

/** Every switch; all optional, all off by default. */
export interface SandboxFaultSettings {
  /** Answer 429 Too Many Requests (with Retry-After) to the next N requests. */
  rateLimit?: RetryFault;
  /** Answer 503 Service Unavailable (with Retry-After when given) to the next N requests. */
  unavailable?: RetryFault;
  /** Delay every matching response by this many ms. */
  slow?: { delayMs: number; kinds?: RequestKind[] };
  /** Destroy the socket mid-response (after the headers and part of the body). */
  dropConnection?: CountedFault;
  /** Lifetime of newly issued tokens, overriding the server default (e.g. 2 s). */
  tokenLifetimeSeconds?: number;
  /** Leave expires_in out of token responses. */
  omitExpiresIn?: boolean;
  /** Serve page `page` (1 = first page of a search) broken, `count` times (default 1). */
  malformedPage?: {
    page: number;
    kind?: 'invalid-json' | 'not-bundle';
    count?: number;
    resourceType?: string;
  };
  /** Next links point at this origin instead of ours (e.g. `http://evil.example`). */
  foreignNextLink?: { origin: string };
  /** DELETE on an export's status URL answers 405 (the server cannot cancel export jobs). */
  refuseExportCancel?: boolean;
  /** Status polls answer this HTTP status (default 500) with an OperationOutcome, N times. */
  statusPollError?: { count: number; status?: number };
  /** The export job fails: the status URL answers 500 with this message. */
  exportFailure?: { message?: string };
  /**
   * Manifests give as transactionTime the moment the job was first reported complete, not
   * its kick-off (as HAPI FHIR did before hapi-fhir#6841).
   */
  transactionTimeAtEnd?: boolean;
  /** Manifests say requiresAccessToken: false and list file URLs on this origin. */
  fileUrls?: { origin?: string; requiresAccessToken?: boolean };
  /**
   * Searches of a type that carry none of the listed parameters answer 400, as Epic does
   * for `Observation?patient=` without `category` or `code`. E.g. `{ Observation: ['category', 'code'] }`.
   */
  requireSearchParams?: Record<string, string[]>;
  /** Search parameters the server silently ignores, as if unsupported (e.g. `['_lastUpdated']`). */
  ignoreSearchParams?: string[];
  /**
   * Paging that does not advance: the position in `_page_token` is ignored, so every page holds
   * the first page's matches again, while the page number in it (and so every next link)
   * still changes, as behind a gateway that drops the paging state.
   */
  stuckPaging?: boolean;
  /**
   * Export kick-offs with `_typeFilter` answer 400 (`reject`: "_typeFilter is not supported";
   * `reject-invalid`: code invalid, "Invalid _typeFilter value: <the first filter> (unknown
   * search parameter)", which names a type), or the filters are dropped (`ignore`), or only
   * the first `_typeFilter` parameter is read (`first-only`, as a server that follows Bulk
   * Data v1.0.1, where `_typeFilter` is one comma-delimited string, may do).
   */
  typeFilter?: 'reject' | 'reject-invalid' | 'ignore' | 'first-only';
  /**
   * Export kick-offs whose `_type` lists a type outside the Patient compartment (Medication)
   * answer 400, as HAPI FHIR does for Patient- and Group-level exports.
   */
  nonCompartmentTypes?: 'reject';
  /**
   * Search pages (of `resourceType`, or every type) carry an OperationOutcome entry
   * (search.mode outcome) with this issue, and at most `keepEntries` matches each, as a server
   * does when "some results could not be returned".
   */
  searchOutcome?: {
    severity: 'information' | 'warning' | 'error' | 'fatal';
    code: string;
    text: string;
    resourceType?: string;
    keepEntries?: number;
  };
  /**
   * Resource types the server does not have, as Epic R4 has no MedicationStatement: left out
   * of the CapabilityStatement, searches and reads answer 404, and an export kick-off whose
   * `_type` names one answers 400 with an OperationOutcome naming it.
   */
  unsupportedTypes?: string[];
  /** Reads (`GET [type]/[id]`) of these types answer 403; searches and exports still work. */
  refuseReads?: string[];
  /**
   * Types the export does not serve although the CapabilityStatement and searches do: a
   * kick-off whose `_type` names one answers 400 (not-supported, naming it).
   */
  exportUnsupportedTypes?: string[];
  /**
   * Types left out of the CapabilityStatement only (a partial or generated statement, a
   * gateway's own): searches, reads and exports still serve them.
   */
  capabilityOmitsTypes?: string[];
  /**
   * Export files of this type send only their first `keepLines` lines (the manifest still
   * announces the full `count`), as a file cut short in storage or by a proxy.
   */
  truncateExportFile?: { resourceType: string; keepLines: number };
  /**
   * A Group export (`Group/[id]/$export`) serves every patient the server holds, members or
   * not, as a server that ignores or mis-resolves the Group (like `Patient/$export`).
   */
  exportIgnoresGroup?: boolean;
  /** Search results carry no meta (versionId, lastUpdated): FHIR makes meta optional. */
  omitMeta?: boolean;
  /** Manifests list an error file with these OperationOutcome lines (e.g. information). */
  exportNotices?: { severity: 'information' | 'warning' | 'error'; text: string }[];
  /**
   * Searches scoped to one of these patients (`patient=`, `subject=`, or `_id=` on Patient),
   * of `resourceType` or every type, answer `status` (default 403) with an OperationOutcome
   * as Epic does for a restricted record (fatal security, code 4118 "User not authorized").
   */
  restrictedPatients?: { ids: string[]; resourceType?: string; status?: number };
  /** The token endpoint answers this error N times. */
  tokenError?: { count: number; status?: number; error: string; description?: string };
}

/** The switch board: set / reset faults, read the current ones. */
export class FaultSwitches {
  private settings: SandboxFaultSettings = {};

  /** Merges switches into the current ones (undefined turns a switch off). */
  set(settings: SandboxFaultSettings): void {
    this.settings = { ...this.settings, ...structuredClone(settings) };
    for (const [key, value] of Object.entries(this.settings))
      if (value === undefined) delete (this.settings as Record<string, unknown>)[key];
  }

  /** Turns every fault off. */
  reset(): void {
    this.settings = {};
  }

  /** A copy of the switches in force. */
  get current(): SandboxFaultSettings {
    return structuredClone(this.settings);
  }

  /** Internal: the live settings (mutated as counts run down). */
  get live(): SandboxFaultSettings {
    return this.settings;
  }

  /**
   * Takes one use of a counted fault if it matches the request; returns it (or undefined).
   * Faults whose count reaches zero switch themselves off.
   */
  take<K extends 'rateLimit' | 'unavailable' | 'dropConnection'>(
    name: K,
    kind: RequestKind,
    resourceType: string | undefined,
  ): SandboxFaultSettings[K] | undefined {
    const fault = this.settings[name];
    if (!fault || fault.count <= 0) return undefined;
    if (!(fault.kinds ?? DATA_KINDS).includes(kind)) return undefined;
    if (fault.resourceType && fault.resourceType !== resourceType) return undefined;
    fault.count -= 1;
    const copy = { ...fault };
    if (fault.count <= 0) delete this.settings[name];
    return copy;
  }

  /** Takes one use of the malformed-page fault for page `page` of a search on `type`. */
  takeMalformedPage(page: number, type: string): 'invalid-json' | 'not-bundle' | undefined {
    const fault = this.settings.malformedPage;
    if (!fault || fault.page !== page) return undefined;
    if (fault.resourceType && fault.resourceType !== type) return undefined;
    const remaining = (fault.count ?? 1) - 1;
    if (remaining <= 0) delete this.settings.malformedPage;
    else fault.count = remaining;
    return fault.kind ?? 'invalid-json';
  }

  /** Takes one use of the status-poll error; returns its HTTP status. */
  takeStatusPollError(): number | undefined {
    const fault = this.settings.statusPollError;
    if (!fault || fault.count <= 0) return undefined;
    fault.count -= 1;
    const status = fault.status ?? 500;
    if (fault.count <= 0) delete this.settings.statusPollError;
    return status;
  }

  /** Takes one use of the token-endpoint error. */
  takeTokenError(): SandboxFaultSettings['tokenError'] | undefined {
    const fault = this.settings.tokenError;
    if (!fault || fault.count <= 0) return undefined;
    fault.count -= 1;
    const copy = { ...fault };
    if (fault.count <= 0) delete this.settings.tokenError;
    return copy;
  }
}
