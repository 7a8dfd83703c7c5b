// Shared helpers for the API tests: a real server on port 0 over real Redis with a unique
// prefix (deleted afterwards), one API key per role, centres built from centre-file data,
// captured logs, and a small fetch wrapper.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { parseCentre, type CentreConfig } from '../../src/config/centre.js';
import { parseServiceConfig, type ServiceConfigInput } from '../../src/config/service.js';
import { hashApiKey } from '../../src/api/auth.js';
import { startServer, type RunningServer, type StartServerOptions } from '../../src/server.js';
import { createLogger } from '../../src/util/logger.js';
import { REDIS_URL, SECRET, deletePrefix, testPrefix, testRedis } from '../sync/helpers.js';

export { REDIS_URL, SECRET, deletePrefix, testPrefix, testRedis };

/** A fresh random API key. */
export function newApiKey(): string {
  return `lhnk_${randomBytes(24).toString('base64url')}`;
}

/** Centre-file data for a test centre (the FHIR URL is never called by these tests). */
export function centreData(
  id: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    id,
    name: `Test centre ${id}`,
    timeZone: 'Europe/London',
    fhir: { baseUrl: 'http://127.0.0.1:9/fhir' },
    auth: { clientId: `client-${id}`, privateKeyFile: 'keys/test.json', kid: 'k1' },
    cohort: { group: 'ibd-cohort' },
    ...extra,
  };
}

/** A parsed test centre. */
export function makeCentre(id: string, extra: Record<string, unknown> = {}): CentreConfig {
  return parseCentre(centreData(id, extra), `/tmp/lhn-test-centres/${id}.yaml`);
}

/** Log lines written by a test logger. */
export class LogCapture extends Writable {
  readonly chunks: string[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.chunks.push(chunk.toString('utf8'));
    done();
  }
  text(): string {
    return this.chunks.join('');
  }
  lines(): Record<string, unknown>[] {
    return this.text()
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

export interface TestApi {
  url: string;
  prefix: string;
  server: RunningServer;
  keys: { viewer: string; operator: string; admin: string };
  logs: LogCapture;
  /** Deletes the prefix's keys and closes the server (and its Redis). */
  close(): Promise<void>;
}

export interface TestApiOptions extends Omit<StartServerOptions, 'centres' | 'prefix' | 'logger'> {
  centres?: CentreConfig[];
  config?: Partial<ServiceConfigInput>;
}

/** Starts the real API server on 127.0.0.1:0 with one key per role. */
export async function startTestApi(options: TestApiOptions = {}): Promise<TestApi> {
  const prefix = testPrefix();
  const keys = { viewer: newApiKey(), operator: newApiKey(), admin: newApiKey() };
  const { config: configInput, centres, ...serverOptions } = options;
  const config = parseServiceConfig({
    pseudonymSecret: SECRET,
    redis: { url: REDIS_URL, prefix },
    ...configInput,
    api: {
      host: '127.0.0.1',
      port: 0,
      keys: [
        { name: 'viewer-key', role: 'viewer', sha256: hashApiKey(keys.viewer) },
        { name: 'operator-key', role: 'operator', sha256: hashApiKey(keys.operator) },
        { name: 'admin-key', role: 'admin', sha256: hashApiKey(keys.admin) },
      ],
      ...configInput?.api,
    },
  });
  const logs = new LogCapture();
  const server = await startServer(config, {
    centres: centres ?? [makeCentre('alpha')],
    prefix,
    logger: createLogger({ level: 'debug', destination: logs }),
    alertIntervalMs: 0,
    ...serverOptions,
  });
  return {
    url: server.url,
    prefix,
    server,
    keys,
    logs,
    async close() {
      const redis = testRedis(config.redis.url);
      try {
        await server.close();
        await deletePrefix(redis, prefix);
      } finally {
        await redis.quit();
      }
    },
  };
}

/** A JSON response with its status and headers. */
export interface JsonResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

/** Calls the API with a bearer key (or none); parses JSON / problem+json bodies. */
export async function call<T = any>(
  url: string,
  options: { key?: string; method?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<JsonResponse<T>> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  if (options.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(url, {
    method: options.method ?? 'GET',
    headers,
    ...(options.body !== undefined
      ? { body: typeof options.body === 'string' ? options.body : JSON.stringify(options.body) }
      : {}),
  });
  const type = response.headers.get('content-type') ?? '';
  const text = await response.text();
  const body = (type.includes('json') && text ? JSON.parse(text) : text) as T;
  return { status: response.status, headers: response.headers, body };
}
