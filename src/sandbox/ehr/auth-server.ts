// The sandbox EHR's authorization server: SMART Backend Services as a strict EHR does it.
// Clients register a JWKS (inline) or a JWKS URL; the token endpoint verifies the client
// assertion with jose (signature by kid, alg, iss = sub = client id, aud = token URL,
// exp present and at most 5 minutes ahead, jti never reused) and issues opaque bearer
// tokens limited to the scopes the client may have. Errors are OAuth JSON a client can act on.
import { randomBytes } from 'node:crypto';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTVerifyGetKey,
} from 'jose';
import type { Jwks } from '../../auth/keys.js';
import { scopeCovers, splitScopes } from '../../auth/scopes.js';

/** Registration of a backend client with the sandbox EHR. */
export interface RegisterClientOptions {
  clientId: string;
  /** The client's public keys, pasted in (as many EHRs accept). */
  jwks?: Jwks;
  /** Or the URL the sandbox fetches the client's JWKS from (loopback only in tests). */
  jwksUrl?: string;
  /** Scopes this client may be granted (default: any system read scope). */
  scopes?: string[];
  /**
   * What to do when asked for scopes the client may not have: `reject` answers
   * invalid_scope (default), `downscope` grants the allowed subset (as some EHRs do).
   */
  scopePolicy?: 'reject' | 'downscope';
}

interface RegisteredClient extends RegisterClientOptions {
  getKey: JWTVerifyGetKey;
}

/** What a valid bearer token stands for. */
export interface IssuedToken {
  clientId: string;
  scopes: string[];
  /** Epoch ms. */
  expiresAt: number;
}

/** An OAuth error the token endpoint answers with. */
export class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
  ) {
    super(description);
  }
}

/** The SMART assertion rules: exp at most this far ahead. */
const MAX_ASSERTION_LIFETIME_S = 300;
const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

export interface AuthServerOptions {
  /** The token endpoint URL (the required assertion audience); known once listening. */
  tokenUrl: () => string;
  now: () => number;
  supportedAlgs: string[];
  defaultTokenLifetimeSeconds: number;
}

export class SandboxAuthServer {
  private readonly clients = new Map<string, RegisteredClient>();
  private readonly tokens = new Map<string, IssuedToken>();
  private readonly usedJtis = new Map<string, number>();

  constructor(private readonly options: AuthServerOptions) {}

  registerClient(registration: RegisterClientOptions): void {
    if (!registration.clientId) throw new Error('registerClient: clientId is required');
    if (registration.jwks?.keys.some((k) => 'd' in k || k.kty === 'oct'))
      throw new Error(
        `registerClient ${registration.clientId}: the JWKS holds private or symmetric key material; register public keys only`,
      );
    let getKey: JWTVerifyGetKey;
    if (registration.jwks) getKey = createLocalJWKSet(registration.jwks);
    else if (registration.jwksUrl)
      getKey = createRemoteJWKSet(new URL(registration.jwksUrl), {
        cooldownDuration: 0,
        cacheMaxAge: 60_000,
      });
    else throw new Error(`registerClient ${registration.clientId}: give jwks or jwksUrl`);
    this.clients.set(registration.clientId, { ...registration, getKey });
  }

  /** Handles a token request's form fields; returns the token response or throws OAuthError. */
  async issueToken(
    form: URLSearchParams,
    lifetimeSeconds: number | undefined,
    omitExpiresIn: boolean,
  ): Promise<Record<string, unknown>> {
    const grantType = form.get('grant_type');
    if (grantType !== 'client_credentials')
      throw new OAuthError(
        400,
        'unsupported_grant_type',
        `grant_type must be client_credentials, got ${grantType ?? '(none)'}`,
      );
    if (form.get('client_assertion_type') !== JWT_BEARER)
      throw new OAuthError(400, 'invalid_request', `client_assertion_type must be ${JWT_BEARER}`);
    const assertion = form.get('client_assertion');
    if (!assertion) throw new OAuthError(400, 'invalid_request', 'client_assertion is missing');
    const requested = splitScopes(form.get('scope'));
    if (requested.length === 0) throw new OAuthError(400, 'invalid_scope', 'scope is required');

    const client = await this.verifyAssertion(assertion);
    const allowed = client.scopes;
    let granted = requested;
    if (allowed) {
      const refused = requested.filter((s) => !allowed.some((a) => scopeCovers(a, s)));
      granted = requested.filter((s) => !refused.includes(s));
      if (refused.length > 0 && (client.scopePolicy ?? 'reject') === 'reject')
        throw new OAuthError(
          400,
          'invalid_scope',
          `scopes not allowed for client ${client.clientId}: ${refused.join(' ')}`,
        );
      if (granted.length === 0)
        throw new OAuthError(
          400,
          'invalid_scope',
          `none of the requested scopes is allowed for client ${client.clientId}`,
        );
    }

    const lifetime = lifetimeSeconds ?? this.options.defaultTokenLifetimeSeconds;
    const token = randomBytes(32).toString('base64url');
    this.tokens.set(token, {
      clientId: client.clientId,
      scopes: granted,
      expiresAt: this.options.now() + lifetime * 1000,
    });
    this.prune();
    return {
      access_token: token,
      token_type: 'bearer',
      ...(omitExpiresIn ? {} : { expires_in: lifetime }),
      scope: granted.join(' '),
    };
  }

  private async verifyAssertion(assertion: string): Promise<RegisteredClient> {
    let header: ReturnType<typeof decodeProtectedHeader>;
    let claims: ReturnType<typeof decodeJwt>;
    try {
      header = decodeProtectedHeader(assertion);
      claims = decodeJwt(assertion);
    } catch {
      throw new OAuthError(400, 'invalid_request', 'client_assertion is not a JWT');
    }
    if (!header.alg || !this.options.supportedAlgs.includes(header.alg))
      throw new OAuthError(
        401,
        'invalid_client',
        `alg ${header.alg ?? '(none)'} not supported; use one of ${this.options.supportedAlgs.join(', ')}`,
      );
    if (!header.kid) throw new OAuthError(401, 'invalid_client', 'the assertion header has no kid');
    const clientId = claims.iss;
    if (!clientId) throw new OAuthError(401, 'invalid_client', 'the assertion has no iss');
    const client = this.clients.get(clientId);
    if (!client) throw new OAuthError(401, 'invalid_client', `unknown client id ${clientId}`);
    if (header.jku && header.jku !== client.jwksUrl)
      throw new OAuthError(
        401,
        'invalid_client',
        'jku is not the JWKS URL registered for this client',
      );
    const nowMs = this.options.now();
    const nowS = Math.floor(nowMs / 1000);
    if (typeof claims.exp !== 'number')
      throw new OAuthError(401, 'invalid_client', 'the assertion has no exp');
    if (claims.exp > nowS + MAX_ASSERTION_LIFETIME_S)
      throw new OAuthError(
        401,
        'invalid_client',
        `exp is more than 5 minutes in the future (exp ${new Date(claims.exp * 1000).toISOString()}, server time ${new Date(nowMs).toISOString()})`,
      );
    if (!claims.jti) throw new OAuthError(401, 'invalid_client', 'the assertion has no jti');
    try {
      await jwtVerify(assertion, client.getKey, {
        issuer: clientId,
        subject: clientId,
        audience: this.options.tokenUrl(),
        algorithms: this.options.supportedAlgs,
        currentDate: new Date(nowMs),
        requiredClaims: ['exp', 'jti'],
      });
    } catch (err) {
      throw new OAuthError(
        401,
        'invalid_client',
        describeVerifyError(err, header.kid, nowMs, claims.exp),
      );
    }
    const seen = this.usedJtis.get(`${clientId} ${claims.jti}`);
    if (seen !== undefined && seen >= nowMs)
      throw new OAuthError(401, 'invalid_client', 'jti already used: each assertion must be new');
    this.usedJtis.set(`${clientId} ${claims.jti}`, claims.exp * 1000);
    return client;
  }

  /** Looks a bearer token up: the token, or the reason it is not valid. */
  checkToken(token: string): IssuedToken | { invalid: string } {
    const issued = this.tokens.get(token);
    if (!issued) return { invalid: 'unknown token' };
    if (issued.expiresAt <= this.options.now()) return { invalid: 'token expired' };
    return issued;
  }

  /** Number of tokens issued and still stored (tests assert on refresh behaviour). */
  get tokenCount(): number {
    return this.tokens.size;
  }

  private prune(): void {
    const nowMs = this.options.now();
    if (this.tokens.size > 1000)
      for (const [t, v] of this.tokens) if (v.expiresAt < nowMs) this.tokens.delete(t);
    if (this.usedJtis.size > 1000)
      for (const [j, exp] of this.usedJtis) if (exp < nowMs) this.usedJtis.delete(j);
  }
}

function describeVerifyError(err: unknown, kid: string, nowMs: number, exp: number): string {
  if (err instanceof joseErrors.JWKSNoMatchingKey)
    return `no registered key with kid ${kid} for this client`;
  if (err instanceof joseErrors.JWTExpired)
    return `the assertion has expired (exp ${new Date(exp * 1000).toISOString()}, server time ${new Date(nowMs).toISOString()})`;
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return 'aud must be the token endpoint URL';
    if (err.claim === 'iat' || err.claim === 'nbf')
      return `${err.claim} is in the future (server time ${new Date(nowMs).toISOString()})`;
    return `claim ${err.claim} is invalid (${err.reason})`;
  }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return `signature does not verify with the registered key ${kid}`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'alg not allowed';
  if (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JOSEError)
    return `cannot verify the assertion (${(err as Error).message})`;
  return 'cannot verify the assertion';
}
