// The service config: one zod schema, read once at start from an optional YAML/JSON file
// (LHN_CONFIG) with environment variables on top. Nothing else in the code reads
// process.env; everything receives a typed ServiceConfig.
import { isIP } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { describeIoError, describeJsonError, describeYamlError, isIoError } from './parse-error.js';
import { z } from 'zod';
import { ConfigError, issuesFromZod } from './errors.js';
import { secureUrl, secureUrlSchema } from './centre.js';
import { readTextFileSync } from './text.js';

export const API_ROLES = ['viewer', 'operator', 'admin'] as const;
export type ApiRole = (typeof API_ROLES)[number];

const apiKey = z
  .object({
    name: z.string().min(1),
    role: z.enum(API_ROLES),
    /** SHA-256 of the key, hex; the key itself is never stored. */
    sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected the hex SHA-256 of the API key'),
  })
  .strict();

/**
 * A registry URL (https, or http on loopback) without user info: fetch refuses to send a URL
 * with user:password, and its error quotes the URL, password included, into the failed
 * reason every API viewer reads. The message names the rule, never the value.
 */
const registryUrl = (credentialsHint: string) =>
  secureUrl.refine((value) => !hasUserInfo(value), {
    message: `must not contain user:password (${credentialsHint})`,
  });

/** Whether a URL carries user info (user:password@), which fetch refuses to send. */
export function hasUserInfo(url: string): boolean {
  if (!URL.canParse(url)) return false;
  const u = new URL(url);
  return u.username !== '' || u.password !== '';
}

/**
 * Whether a value can go in an HTTP header as a token: visible ASCII only. A line break or NUL
 * makes fetch refuse the header, and its error quotes the value; a space or a non-ASCII
 * character is not a Bearer token either (RFC 6750 b64token).
 */
export function isHeaderToken(value: string): boolean {
  return /^[\x21-\x7e]+$/.test(value);
}

/**
 * A bearer token goes in the Authorization header as is: visible ASCII only (RFC 6750's
 * b64token is narrower still). A line break (a wrapped `openssl rand -base64` output), a space
 * or a control character makes every delivery fail, and fetch's error quotes the header.
 */
const bearerToken = z.string().min(1).refine(isHeaderToken, {
  message:
    'must not contain whitespace, line breaks, control or non-ASCII characters (it is sent as an HTTP header); a wrapped base64 token must be joined into one line',
});

export const ServiceConfigSchema = z
  .object({
    redis: z
      .object({
        url: z
          .string()
          .regex(/^rediss?:\/\//, 'expected redis:// or rediss://')
          .default('redis://127.0.0.1:6379'),
        /** BullMQ key prefix; wrap in {braces} for Redis Cluster, e.g. `{lhn}`. */
        prefix: z.string().min(1).default('lhn'),
      })
      .strict()
      .prefault({}),
    centresDir: z.string().min(1).default('./centres'),
    mappingsDir: z.string().min(1).default('./mappings'),
    /** Where `keys generate` writes private keys (mode 0600) and JWKS reads public ones. */
    keysDir: z.string().min(1).default('./keys'),
    /** Per-deployment secret for HMAC-SHA256 pseudonyms; see pseudonymSecretProblem. */
    pseudonymSecret: z.string(),
    /**
     * The secret is already in use and cannot change (every pseudonym would): only its length
     * is checked, not how guessable it looks. For deployments whose secret predates the check.
     */
    pseudonymSecretInUse: z.boolean().default(false),
    registry: z
      .object({
        url: registryUrl('give credentials in registry.auth').optional(),
        auth: z
          .discriminatedUnion('type', [
            z.object({ type: z.literal('none') }).strict(),
            z.object({ type: z.literal('bearer'), token: bearerToken }).strict(),
            z
              .object({
                type: z.literal('client-credentials'),
                tokenUrl: registryUrl('the client is authenticated with clientId and clientSecret'),
                clientId: z.string().min(1),
                clientSecret: z.string().min(1),
                scope: z.string().optional(),
              })
              .strict(),
          ])
          .default({ type: 'none' }),
        timeoutMs: z.number().int().positive().default(30_000),
      })
      .strict()
      .prefault({}),
    api: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        /** Public base URL of this service (the JWKS URL centres register is built from it). */
        publicUrl: z
          .url({
            protocol: /^https?$/,
            error: 'expected an absolute http:// or https:// URL, e.g. https://bridge.example.org',
          })
          .optional(),
        keys: z.array(apiKey).default([]),
        /**
         * Express `trust proxy`: false (default) uses the socket address; behind a reverse
         * proxy set the number of proxy hops (1), `loopback`, or a list of proxy addresses,
         * so client addresses (auth-failure rate limiting, logs) come from X-Forwarded-For.
         */
        trustProxy: z
          .union([z.boolean(), z.number().int().min(0), z.string().min(1)])
          // `true` trusts every X-Forwarded-For entry: the left-most one, which the client
          // chooses, becomes its address, so the failed-key limit could be dodged at will.
          .refine((v) => v !== true && String(v).trim().toLowerCase() !== 'true', {
            message:
              'true is not accepted: it would trust every X-Forwarded-For entry, so any client could pick its own address and dodge the failed-key limit; set the number of proxy hops in front of the API (1 for one reverse proxy), or the proxy\'s address or CIDR ("10.0.0.5", "10.0.0.0/8", "loopback"), or false when clients connect directly',
          })
          // Checked here, not left to Express: its own check throws when the app is built, an
          // unnamed error after the config was accepted.
          .superRefine((v, ctx) => {
            if (typeof v !== 'string' || v.trim().toLowerCase() === 'true') return;
            const bad = v
              .split(',')
              .map((part) => part.trim())
              .filter((part) => !isTrustedProxyEntry(part));
            if (bad.length > 0)
              ctx.addIssue({
                code: 'custom',
                message: `${bad.map((b) => JSON.stringify(b)).join(', ')} ${bad.length === 1 ? 'is' : 'are'} not a proxy address: give a hop count (1), false, or a comma-separated list of IP addresses, CIDR ranges ("10.0.0.0/8") and the names loopback, linklocal, uniquelocal`,
              });
          })
          .default(false),
      })
      .strict()
      .prefault({}),
    fhir: z
      .object({
        requestTimeoutMs: z.number().int().positive().default(30_000),
        maxRetries: z.number().int().min(0).max(20).default(5),
        /** Longest Retry-After honoured; larger values are capped to this. */
        maxRetryAfterSeconds: z.number().int().min(1).default(300),
        /** Most pages one search follows before it fails (default 10,000; a paging loop guard). */
        maxPagesPerSearch: z.number().int().min(1).optional(),
      })
      .strict()
      .prefault({}),
    submissions: z
      .object({
        attempts: z.number().int().min(1).default(12),
        backoffMs: z.number().int().min(1).default(5_000),
        keepCompletedHours: z
          .number()
          .positive()
          .default(24 * 7),
        keepCompletedCount: z.number().int().min(0).default(100_000),
      })
      .strict()
      .prefault({}),
    alerts: z
      .object({
        /**
         * Where alert events are POSTed: https (http only to a loopback host), as Slack and
         * Teams webhooks carry their secret in the path.
         */
        webhookUrl: secureUrlSchema('https://hooks.example.org/services/...').optional(),
        staleAfterHours: z.number().positive().default(48),
        failuresInARow: z.number().int().min(1).default(3),
      })
      .strict()
      .prefault({}),
    outbound: z
      .object({
        /**
         * Proxy for every outbound request (EHR, SMART token endpoint, registry, alert
         * webhook): `http://[user:password@]proxy.hospital.org:3128`. From HTTPS_PROXY /
         * HTTP_PROXY when not set here.
         */
        proxyUrl: z
          .preprocess(
            // `proxy.hospital.org:3128` (no scheme) means http://, as curl reads it.
            (v) =>
              typeof v === 'string' && !/^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? `http://${v}` : v,
            z.url({ protocol: /^https?$/, error: 'expected an http:// or https:// proxy URL' }),
          )
          .optional(),
        /**
         * Hosts reached without the proxy, as NO_PROXY: comma-separated host names (a name
         * covers its subdomains, `.name` only them), IP addresses, `host:port`, or `*`.
         * Loopback is always reached directly.
         */
        noProxy: z.string().default(''),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        /**
         * Port of the worker's own GET /health (200 while its Redis connection is ready, 503
         * otherwise), for container healthchecks; off unless set (a worker serves no API).
         */
        healthPort: z.number().int().min(0).max(65535).optional(),
        /** Interface of that /health: loopback by default (a container probe runs inside). */
        healthHost: z.string().min(1).default('127.0.0.1'),
      })
      .strict()
      .prefault({}),
    log: z
      .object({
        level: z
          .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
          .default('info'),
      })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine(
    (config, ctx) => {
      const problem = pseudonymSecretProblem(config.pseudonymSecret, {
        lengthOnly: config.pseudonymSecretInUse === true,
      });
      if (problem) ctx.addIssue({ code: 'custom', path: ['pseudonymSecret'], message: problem });
    },
    {
      // Run even when another setting is wrong (zod skips a refinement after an aborting
      // issue, e.g. a bad enum), so every problem is listed at once; the value may then be
      // partly unparsed, hence the check that the secret itself is a string.
      when: (payload) =>
        typeof (payload.value as { pseudonymSecret?: unknown } | undefined)?.pseudonymSecret ===
        'string',
    },
  );

export type ServiceConfig = z.infer<typeof ServiceConfigSchema>;
export type ServiceConfigInput = z.input<typeof ServiceConfigSchema>;

/** Environment variables and the config path each sets. */
export const ENV_VARS: Record<
  string,
  {
    path: string[];
    type: 'string' | 'number' | 'json' | 'json-or-string';
    /** Common names applied first (lowest first), so the LHN_ name of a setting wins. */
    rank?: number;
  }
> = {
  LHN_REDIS_URL: { path: ['redis', 'url'], type: 'string' },
  REDIS_URL: { path: ['redis', 'url'], type: 'string', rank: -1 },
  // The usual proxy variables; lower-case ones win over upper-case (as curl), HTTPS over HTTP.
  HTTP_PROXY: { path: ['outbound', 'proxyUrl'], type: 'string', rank: -4 },
  http_proxy: { path: ['outbound', 'proxyUrl'], type: 'string', rank: -3 },
  HTTPS_PROXY: { path: ['outbound', 'proxyUrl'], type: 'string', rank: -2 },
  https_proxy: { path: ['outbound', 'proxyUrl'], type: 'string', rank: -1 },
  NO_PROXY: { path: ['outbound', 'noProxy'], type: 'string', rank: -2 },
  no_proxy: { path: ['outbound', 'noProxy'], type: 'string', rank: -1 },
  LHN_PROXY_URL: { path: ['outbound', 'proxyUrl'], type: 'string' },
  LHN_NO_PROXY: { path: ['outbound', 'noProxy'], type: 'string' },
  LHN_QUEUE_PREFIX: { path: ['redis', 'prefix'], type: 'string' },
  LHN_CENTRES_DIR: { path: ['centresDir'], type: 'string' },
  LHN_MAPPINGS_DIR: { path: ['mappingsDir'], type: 'string' },
  LHN_KEYS_DIR: { path: ['keysDir'], type: 'string' },
  LHN_PSEUDONYM_SECRET: { path: ['pseudonymSecret'], type: 'string' },
  LHN_PSEUDONYM_SECRET_IN_USE: { path: ['pseudonymSecretInUse'], type: 'json' },
  LHN_REGISTRY_URL: { path: ['registry', 'url'], type: 'string' },
  LHN_REGISTRY_AUTH: { path: ['registry', 'auth'], type: 'json' },
  LHN_API_HOST: { path: ['api', 'host'], type: 'string' },
  LHN_API_PORT: { path: ['api', 'port'], type: 'number' },
  LHN_PUBLIC_URL: { path: ['api', 'publicUrl'], type: 'string' },
  LHN_API_KEYS: { path: ['api', 'keys'], type: 'json' },
  LHN_TRUST_PROXY: { path: ['api', 'trustProxy'], type: 'json-or-string' },
  LHN_ALERT_WEBHOOK_URL: { path: ['alerts', 'webhookUrl'], type: 'string' },
  LHN_LOG_LEVEL: { path: ['log', 'level'], type: 'string' },
  LHN_WORKER_HEALTH_PORT: { path: ['worker', 'healthPort'], type: 'number' },
  LHN_WORKER_HEALTH_HOST: { path: ['worker', 'healthHost'], type: 'string' },
};

function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

/** Sets in `raw` what the named environment variables hold; bad values go to `issues`. */
function applyEnv(
  raw: Record<string, unknown>,
  env: Record<string, string | undefined>,
  names: readonly string[],
  issues: { path: string; message: string }[],
): void {
  // Common names (REDIS_URL, HTTPS_PROXY...) first, so an LHN_ name set too wins.
  const ordered = [...names].sort((a, b) => (ENV_VARS[a]!.rank ?? 0) - (ENV_VARS[b]!.rank ?? 0));
  for (const name of ordered) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    const spec = ENV_VARS[name]!;
    if (spec.type === 'number') {
      const n = Number(value);
      if (!Number.isFinite(n))
        issues.push({ path: name, message: `expected a number, got "${value}"` });
      else setPath(raw, spec.path, n);
    } else if (spec.type === 'json') {
      try {
        setPath(raw, spec.path, JSON.parse(value));
      } catch {
        issues.push({ path: name, message: 'expected JSON' });
      }
    } else if (spec.type === 'json-or-string') {
      // `true`, `1` parse as JSON; `loopback` or `10.0.0.1, 10.0.0.2` stay text.
      let parsed: unknown = value;
      try {
        parsed = JSON.parse(value);
      } catch {
        // not JSON: keep the text
      }
      setPath(raw, spec.path, parsed);
    } else setPath(raw, spec.path, value);
  }
}

/**
 * Says which environment variable set a bad value (the person fixing it set LHN_REDIS_URL,
 * not `redis.url`), and how to set the one required setting.
 */
function explainEnv(
  issues: { path: string; message: string }[],
  env: Record<string, string | undefined>,
): { path: string; message: string }[] {
  return issues.map((issue) => {
    if (issue.path === 'pseudonymSecret' && issue.message.startsWith('required'))
      return {
        ...issue,
        message:
          'required: set LHN_PSEUDONYM_SECRET to a random secret of at least 32 characters (e.g. `openssl rand -hex 32`); keep it stable, pseudonyms depend on it',
      };
    const from = Object.entries(ENV_VARS)
      .filter(([name, spec]) => {
        const value = env[name];
        if (value === undefined || value === '') return false;
        const dotted = spec.path.join('.');
        return (
          issue.path === dotted ||
          issue.path.startsWith(`${dotted}.`) ||
          issue.path.startsWith(`${dotted}[`)
        );
      })
      .sort((a, b) => (b[1].rank ?? 0) - (a[1].rank ?? 0))[0];
    return from ? { ...issue, message: `${issue.message} (set by ${from[0]})` } : issue;
  });
}

/**
 * Builds the service config from an optional file (`LHN_CONFIG`) and the environment.
 * Environment variables win over the file. Throws ConfigError listing every problem.
 */
export function loadServiceConfig(env: Record<string, string | undefined>): ServiceConfig {
  let raw: Record<string, unknown> = {};
  const issues: { path: string; message: string }[] = [];
  const file = env.LHN_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readTextFileSync(file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new ConfigError(file, [
        {
          path: '',
          message: `cannot read the config file named by LHN_CONFIG: ${isIoError(e) ? describeIoError(e) : 'read failed'}`,
        },
      ]);
    }
    // The parser's own message quotes the text around the error (a secret, perhaps): only
    // the line, column and kind are reported.
    let data: unknown;
    try {
      data = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    } catch (err) {
      throw new ConfigError(file, [
        {
          path: '',
          message: file.endsWith('.json') ? describeJsonError(text) : describeYamlError(err),
        },
      ]);
    }
    if (typeof data !== 'object' || data === null || Array.isArray(data))
      throw new ConfigError(file, [
        { path: '', message: 'expected a mapping of settings at the top level' },
      ]);
    raw = data as Record<string, unknown>;
  }
  applyEnv(raw, env, Object.keys(ENV_VARS), issues);
  const result = ServiceConfigSchema.safeParse(raw);
  if (!result.success)
    issues.push(...explainEnv(issuesFromZod(result.error, ServiceConfigSchema), env));
  if (issues.length > 0 || !result.success)
    throw new ConfigError(file ? `${file} + environment` : 'environment', issues);
  return result.data;
}

/** The names Express (proxy-addr) accepts for address ranges in `trust proxy`. */
const PROXY_RANGE_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/**
 * Whether one entry of a `trust proxy` list is what Express accepts: a range name, an IP
 * address, or an address with a prefix length of at least 1 (`10.0.0.0/8`) or an IPv4 netmask
 * (`/255.0.0.0`).
 */
function isTrustedProxyEntry(entry: string): boolean {
  if (PROXY_RANGE_NAMES.has(entry)) return true;
  const slash = entry.indexOf('/');
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const family = isIP(address);
  if (family === 0) return false;
  if (slash < 0) return true;
  const range = entry.slice(slash + 1);
  if (/^\d+$/.test(range)) {
    const bits = Number(range);
    return bits >= 1 && bits <= (family === 4 ? 32 : 128);
  }
  if (family !== 4 || isIP(range) !== 4) return false;
  // A netmask is ones then zeros (255.255.0.0, not 255.0.255.0).
  const mask = range.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
  const zeros = 2 ** 32 - 1 - mask;
  return mask !== 0 && (zeros & (zeros + 1)) === 0;
}

/** How to make a good pseudonym secret (said by every refusal). */
const SECRET_ADVICE =
  'use a random secret of at least 32 characters, e.g. `openssl rand -hex 32`, and keep it stable (pseudonyms depend on it); a deployment whose secret is already in use sets LHN_PSEUDONYM_SECRET_IN_USE=true instead of changing it';

/** Placeholder words people leave in place of a secret (a space: any separator or none). */
const PLACEHOLDER_WORDS = [
  'change me',
  'changeit',
  'secret',
  'password',
  'passw0rd',
  'example',
  'sample',
  'test',
  'placeholder',
  'dummy',
  'default',
  'insecure',
  'your secret',
  'replace me',
  'xxx',
  'todo',
  'fixme',
];

/**
 * A secret that starts with a placeholder word is refused when the word is written as people
 * write words (lower case, Capitalised or camelCase, UPPER CASE: `secretkey...`,
 * `ChangeMe...`, `DEFAULT...`), or in any case when a non-letter or the end follows it
 * (`sEcReT-...`). A random base64 secret that merely begins with mixed-case letters such as
 * `xXx` or `TeSt` is not taken for one (1 in 27,000 were, when any case counted).
 */
const PLACEHOLDER_SECRET = (() => {
  const cased = PLACEHOLDER_WORDS.flatMap((word) => {
    const parts = word.split(' ');
    const lower = parts.join('[\\W_]*');
    const capital = parts
      .map(
        (p, i) =>
          `${i === 0 ? p[0]!.toUpperCase() : `[${p[0]!}${p[0]!.toUpperCase()}]`}${p.slice(1)}`,
      )
      .join('[\\W_]*');
    const upper = parts.map((p) => p.toUpperCase()).join('[\\W_]*');
    return [lower, capital, upper];
  });
  const anyCase = PLACEHOLDER_WORDS.map((w) => w.split(' ').join('[\\W_]*'));
  const asWritten = new RegExp(`^(?:${cased.join('|')})`);
  const endsThere = new RegExp(`^(?:${anyCase.join('|')})(?![a-z])`, 'i');
  return { test: (secret: string): boolean => asWritten.test(secret) || endsThere.test(secret) };
})();

/** Earlier placeholders of this code base that must never become a real secret. */
const KNOWN_PLACEHOLDERS = new Set(['keys-command-placeholder-not-a-secret-0000']);

/**
 * Why a pseudonym secret is too weak, or undefined when it will do: at least 32 characters,
 * at least 10 distinct ones (`'a'` x 32 is no secret), and not a known placeholder
 * (`changeme...`, `secret...`, `password...`, `test...`, `example...`). The secret itself is
 * never quoted. `lengthOnly`: a secret already in use (pseudonymSecretInUse), whose change
 * would re-key every patient and visit, is held to the length rule alone.
 */
export function pseudonymSecretProblem(
  secret: string,
  options: { lengthOnly?: boolean } = {},
): string | undefined {
  if (secret.length < 32) return `must be at least 32 characters; ${SECRET_ADVICE}`;
  if (options.lengthOnly) return undefined;
  const distinct = new Set(secret).size;
  if (distinct < 10)
    return `has only ${distinct} distinct characters, so it is easy to guess; ${SECRET_ADVICE}`;
  if (KNOWN_PLACEHOLDERS.has(secret) || PLACEHOLDER_SECRET.test(secret.trim()))
    return `looks like a placeholder (it starts with a word such as changeme, secret, password, test or example); ${SECRET_ADVICE}`;
  return undefined;
}

/** Parses a config object given in code (tests, the demo); throws ConfigError. */
export function parseServiceConfig(input: ServiceConfigInput): ServiceConfig {
  const result = ServiceConfigSchema.safeParse(input);
  if (!result.success) throw new ConfigError('config', issuesFromZod(result.error));
  return result.data;
}

/** The outbound settings alone, from the environment (commands that need no full config). */
export function loadOutboundConfig(
  env: Record<string, string | undefined>,
): ServiceConfig['outbound'] {
  const raw: Record<string, unknown> = {};
  const issues: { path: string; message: string }[] = [];
  applyEnv(
    raw,
    env,
    Object.keys(ENV_VARS).filter((name) => ENV_VARS[name]!.path[0] === 'outbound'),
    issues,
  );
  const result = ServiceConfigSchema.shape.outbound.safeParse(raw.outbound ?? {});
  if (!result.success)
    issues.push(
      ...explainEnv(
        issuesFromZod(result.error).map((i) => ({ ...i, path: `outbound.${i.path}` })),
        env,
      ),
    );
  if (issues.length > 0 || !result.success) throw new ConfigError('environment', issues);
  return result.data;
}
