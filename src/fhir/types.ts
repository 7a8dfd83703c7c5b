// The few FHIR shapes the pull layer relies on. Resources stay open records: the pull layer
// passes them through untouched and the mapping layer reads what it needs.

/** Any FHIR resource as received. */
export interface FhirResource {
  resourceType: string;
  id?: string;
  meta?: { versionId?: string; lastUpdated?: string; [key: string]: unknown };
  [key: string]: unknown;
}

/** A search-set Bundle, as far as paging needs it. */
export interface FhirBundle extends FhirResource {
  resourceType: 'Bundle';
  type?: string;
  total?: number;
  link?: { relation: string; url: string }[];
  entry?: {
    fullUrl?: string;
    resource?: FhirResource;
    search?: { mode?: string };
  }[];
}

/**
 * The source of access tokens the client needs (SmartAuth from src/auth satisfies it).
 * getAccessToken may reject with a RetryableTokenFailure (SmartAuthError for a 429, 5xx or
 * network failure of the token endpoint): the client retries the request like a 429.
 */
export interface FhirTokenSource {
  getAccessToken(): Promise<{ token: string; origin?: string; expiresAt?: number }>;
  invalidate(token: string): void;
}

/** A token failure worth retrying, with the token endpoint's Retry-After when it sent one. */
export interface RetryableTokenFailure extends Error {
  retryable: true;
  retryAfter?: string | undefined;
}

/** True for an Error from a token source that says trying again may succeed. */
export function isRetryableTokenFailure(err: unknown): err is RetryableTokenFailure {
  return err instanceof Error && (err as { retryable?: unknown }).retryable === true;
}
