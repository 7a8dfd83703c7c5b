// Shared test helpers for the FHIR layer: a token source with the SmartAuth shape (so unit
// tests need no token server), a logger whose output can be inspected, and a client factory
// with injected sleep/random so retries never wait for real.
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../src/util/logger.js';
import {
  createFhirClient,
  type CreateFhirClientOptions,
  type FhirClient,
} from '../../src/fhir/client.js';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';

export const EHR = 'https://ehr.example';
export const BASE = `${EHR}/fhir`;

/** A token source handing out `tokens` in order; each invalidate() moves to the next. */
export function createTokenSource(tokens: string[], origin = EHR) {
  let index = 0;
  const state = {
    invalidated: [] as string[],
    issued: 0,
    async getAccessToken() {
      state.issued += 1;
      return {
        token: tokens[Math.min(index, tokens.length - 1)]!,
        origin,
        expiresAt: Date.now() + 300_000,
        scopes: [],
      };
    },
    invalidate(token: string) {
      state.invalidated.push(token);
      if (tokens[index] === token) index += 1;
    },
  };
  return state;
}

/** A debug-level logger writing into an array of lines. */
export function createCapturingLogger(): { logger: Logger; lines: string[]; text: () => string } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, callback) {
      lines.push(chunk.toString());
      callback();
    },
  });
  return {
    logger: createLogger({ level: 'debug', destination }),
    lines,
    text: () => lines.join(''),
  };
}

export function makeCentre(overrides: Record<string, unknown> = {}): CentreConfig {
  return parseCentre(
    {
      id: 'centre-a',
      name: 'Centre A',
      fhir: { baseUrl: BASE },
      auth: { clientId: 'bridge', privateKeyFile: 'key.json', kid: 'k1' },
      cohort: { group: 'ibd' },
      ...overrides,
    },
    '/tmp/centre-a.yaml',
  );
}

export interface TestClient {
  client: FhirClient;
  sleeps: number[];
  auth: ReturnType<typeof createTokenSource>;
  log: ReturnType<typeof createCapturingLogger>;
}

/** A client for BASE with recorded sleeps and random() = 0.5. */
export function makeClient(
  options: {
    tokens?: string[];
    maxRetries?: number;
    maxRetryAfterSeconds?: number;
    requestTimeoutMs?: number;
    maxPagesPerSearch?: number;
    now?: () => number;
    centre?: CentreConfig;
  } & Partial<Pick<CreateFhirClientOptions, 'metrics' | 'limiter'>> = {},
): TestClient {
  const sleeps: number[] = [];
  const auth = createTokenSource(options.tokens ?? ['token-1', 'token-2', 'token-3']);
  const log = createCapturingLogger();
  const client = createFhirClient({
    centre: options.centre ?? makeCentre(),
    auth,
    logger: log.logger,
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...(options.limiter ? { limiter: options.limiter } : {}),
    config: {
      maxRetries: options.maxRetries ?? 3,
      maxRetryAfterSeconds: options.maxRetryAfterSeconds ?? 120,
      requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
      ...(options.maxPagesPerSearch ? { maxPagesPerSearch: options.maxPagesPerSearch } : {}),
    },
    retry: {
      sleep: async (ms: number) => {
        sleeps.push(ms);
      },
      random: () => 0.5,
      ...(options.now ? { now: options.now } : {}),
    },
  });
  return { client, sleeps, auth, log };
}

/** A search-set Bundle with the given resources and an optional next link. */
export function bundle(
  resources: Record<string, unknown>[],
  next?: string,
): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    type: 'searchset',
    ...(next
      ? {
          link: [
            { relation: 'self', url: 'x' },
            { relation: 'next', url: next },
          ],
        }
      : {}),
    entry: resources.map((resource) => ({ resource, search: { mode: 'match' } })),
  };
}

/** Collects an async iterable. */
export async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}
