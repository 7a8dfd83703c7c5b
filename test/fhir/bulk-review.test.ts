// Bulk pull against a loopback EHR emulator (node:http on 127.0.0.1): manifest shapes that
// deployed servers send, the kick-off's retry policy, a resumed job whose files expired, very
// long NDJSON lines and the kick-off time in the manifest summary.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createFhirClient, type FhirClient } from '../../src/fhir/client.js';
import { MalformedFhirResponseError } from '../../src/fhir/errors.js';
import {
  KICKOFF_MAX_RETRIES,
  MAX_NDJSON_LINE_LENGTH,
  buildExportUrl,
  readLines,
  pullBulk,
  type BulkItem,
  type BulkManifestSummary,
  type PendingExport,
  type PendingExportStore,
  type PullBulkOptions,
} from '../../src/fhir/pull-bulk.js';
import { createCapturingLogger, createTokenSource, makeCentre } from './helpers.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void;

interface Ehr {
  origin: string;
  requests: { method: string; path: string; auth: string | undefined }[];
}

const servers: http.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

async function serve(handler: Handler): Promise<Ehr> {
  const requests: Ehr['requests'] = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    requests.push({
      method: req.method ?? 'GET',
      path: url.pathname,
      auth: req.headers.authorization,
    });
    handler(req, res, url);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, requests };
}

function clientFor(
  origin: string,
  config: { requestTimeoutMs?: number; maxRetries?: number } = {},
) {
  const centre = makeCentre({ fhir: { baseUrl: `${origin}/fhir` } });
  const log = createCapturingLogger();
  const client: FhirClient = createFhirClient({
    centre,
    auth: createTokenSource(['token-1', 'token-2'], origin),
    logger: log.logger,
    config: {
      maxRetries: config.maxRetries ?? 3,
      maxRetryAfterSeconds: 120,
      requestTimeoutMs: config.requestTimeoutMs ?? 5_000,
    },
    retry: { sleep: () => Promise.resolve(), random: () => 0.5 },
  });
  return { centre, client, log };
}

async function run(options: Omit<PullBulkOptions, 'sleep'>) {
  const items: BulkItem[] = [];
  let error: unknown;
  try {
    for await (const item of pullBulk({ sleep: () => Promise.resolve(), ...options }))
      items.push(item);
  } catch (err) {
    error = err;
  }
  return { items, error };
}

const ndjson = (...rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
const ids = (items: BulkItem[]) =>
  items.map((i) =>
    i.kind === 'resource' ? `${i.resource.resourceType}/${i.resource.id}` : i.kind,
  );

/** An EHR with one job at /status/1 answering `manifest`, and /files/* as NDJSON. */
function exportServer(manifest: (origin: string) => unknown, files: Record<string, string> = {}) {
  const ehr: { value?: Ehr } = {};
  const handler: Handler = (req, res, url) => {
    const origin = ehr.value!.origin;
    if (url.pathname.endsWith('/$export')) {
      res.writeHead(202, { 'content-location': `${origin}/status/1` });
      res.end();
    } else if (url.pathname === '/status/1') {
      if (req.method === 'DELETE') {
        res.writeHead(202);
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(manifest(origin)));
    } else if (files[url.pathname] !== undefined) {
      res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
      res.end(files[url.pathname]);
    } else {
      res.writeHead(404);
      res.end();
    }
  };
  return serve(handler).then((e) => (ehr.value = e));
}

describe('bulk manifests as deployed servers send them', () => {
  it('when the manifest has no request, requiresAccessToken or error (HAPI before 6.2), then its files are read with the token', async () => {
    const ehr = await exportServer(
      (origin) => ({
        transactionTime: '2022-09-01T10:00:00.000+00:00',
        output: [{ type: 'Patient', url: `${origin}/files/p.ndjson` }],
      }),
      { '/files/p.ndjson': ndjson({ resourceType: 'Patient', id: 'a' }) },
    );
    const { client, centre } = clientFor(ehr.origin);
    let summary: unknown;
    const { items, error } = await run({ client, centre, onManifest: (s) => (summary = s) });
    expect(error).toBeUndefined();
    expect(ids(items)).toEqual(['Patient/a']);
    expect(summary).toMatchObject({ requiresAccessToken: true, outputFiles: 1, errorFiles: 0 });
    expect(ehr.requests.find((r) => r.path === '/files/p.ndjson')?.auth).toBe('Bearer token-1');
  });

  it('when the manifest has no output (nothing matched: HAPI 6.10, LinuxForHealth), then the pull ends with nothing and no error', async () => {
    const ehr = await exportServer(() => ({
      transactionTime: '2024-01-25T10:00:00Z',
      request: 'x',
      requiresAccessToken: true,
    }));
    const { client, centre } = clientFor(ehr.origin);
    let summary: unknown;
    const { items, error } = await run({ client, centre, onManifest: (s) => (summary = s) });
    expect(error).toBeUndefined();
    expect(items).toEqual([]);
    expect(summary).toMatchObject({ transactionTime: '2024-01-25T10:00:00Z', outputFiles: 0 });
    expect(ehr.requests.filter((r) => r.method === 'DELETE')).toHaveLength(1);
  });
});

describe('bulk kick-off retries', () => {
  /** An EHR whose kick-offs answer by `kickOff` (per attempt, 1-based); jobs export one Patient. */
  async function kickOffServer(
    kickOff: (attempt: number, res: http.ServerResponse, origin: string) => void,
  ) {
    let attempts = 0;
    const ehr: { value?: Ehr } = {};
    const value = await serve((req, res, url) => {
      const origin = ehr.value!.origin;
      if (url.pathname.endsWith('/$export')) kickOff(++attempts, res, origin);
      else if (url.pathname === '/status/1') {
        res.writeHead(req.method === 'DELETE' ? 202 : 200);
        res.end(
          req.method === 'DELETE'
            ? ''
            : JSON.stringify({
                transactionTime: '2025-01-01T00:00:00Z',
                output: [{ type: 'Patient', url: `${origin}/files/p.ndjson` }],
              }),
        );
      } else {
        res.writeHead(200);
        res.end(ndjson({ resourceType: 'Patient', id: 'a' }));
      }
    });
    ehr.value = value;
    return value;
  }
  const kickOffs = (ehr: Ehr) => ehr.requests.filter((r) => r.path.endsWith('/$export')).length;
  const accept = (res: http.ServerResponse, origin: string) => {
    res.writeHead(202, { 'content-location': `${origin}/status/1` });
    res.end();
  };

  it.each([
    ['answers after the request timeout', 'timeout'],
    ['resets the connection after reading the request', 'reset'],
  ])(
    'when the kick-off is accepted but the EHR %s, then it is not sent again and the error says a job may be running',
    async (_what, fault) => {
      const ehr = await kickOffServer((_attempt, res, origin) => {
        if (fault === 'reset') res.socket?.destroy();
        else setTimeout(() => accept(res, origin), 600);
      });
      const { client, centre } = clientFor(ehr.origin, { requestTimeoutMs: 200, maxRetries: 3 });
      const saved: unknown[] = [];
      const { error } = await run({
        client,
        centre,
        pending: {
          load: () => Promise.resolve(null),
          save: (p) => {
            saved.push(p);
            return Promise.resolve();
          },
          clear: () => Promise.resolve(),
        },
      });
      expect(kickOffs(ehr)).toBe(1);
      expect((error as Error).name).toBe('BulkExportError');
      expect((error as Error).message).toMatch(/not sent again/);
      expect((error as { hint: string }).hint).toMatch(
        /export job may now be running on the EHR.*next sync starts a new export.*Oracle Health.*429/,
      );
      expect(saved).toEqual([]);
    },
  );

  it('when the kick-off is answered 429 (Retry-After) then 503, then it is sent again and the export runs', async () => {
    const ehr = await kickOffServer((attempt, res, origin) => {
      if (attempt === 1) res.writeHead(429, { 'retry-after': '7' }).end();
      else if (attempt === 2) res.writeHead(503).end();
      else accept(res, origin);
    });
    const { client, centre } = clientFor(ehr.origin);
    const sleeps: number[] = [];
    const items: BulkItem[] = [];
    for await (const item of pullBulk({
      client,
      centre,
      sleep: (ms) => {
        sleeps.push(ms);
        return Promise.resolve();
      },
    }))
      items.push(item);
    expect(ids(items)).toEqual(['Patient/a']);
    expect(kickOffs(ehr)).toBe(3);
    expect(sleeps.slice(0, 2)).toEqual([7_000, 2_000]);
  });

  it('when every kick-off is answered 429, then it is sent 1 + KICKOFF_MAX_RETRIES times and the 429 is the error', async () => {
    const ehr = await kickOffServer((_attempt, res) => res.writeHead(429).end());
    const { client, centre } = clientFor(ehr.origin);
    const { error } = await run({ client, centre });
    expect(kickOffs(ehr)).toBe(1 + KICKOFF_MAX_RETRIES);
    expect(error).toMatchObject({ name: 'FhirHttpError', status: 429 });
  });
});

describe('a resumed bulk export whose files have expired', () => {
  it.each([404, 410, 403])(
    'when the kept job answers its manifest but its first file answers %i, then it is cancelled and a new export is read',
    async (status) => {
      let kickOffsSeen = 0;
      const ehr: { value?: Ehr } = {};
      ehr.value = await serve((req, res, url) => {
        const origin = ehr.value!.origin;
        if (url.pathname.endsWith('/$export')) {
          kickOffsSeen += 1;
          res.writeHead(202, { 'content-location': `${origin}/status/new` });
          res.end();
        } else if (url.pathname.startsWith('/status/')) {
          if (req.method === 'DELETE') {
            res.writeHead(202);
            res.end();
            return;
          }
          const job = url.pathname.slice('/status/'.length);
          res.writeHead(200);
          res.end(
            JSON.stringify({
              transactionTime: job === 'old' ? '2025-01-01T00:00:00Z' : '2025-01-02T00:00:00Z',
              output: [{ type: 'Patient', url: `${origin}/files/${job}.ndjson` }],
            }),
          );
        } else if (url.pathname === '/files/old.ndjson') {
          res.writeHead(status, { 'content-type': 'application/fhir+json' });
          res.end(
            JSON.stringify({
              resourceType: 'OperationOutcome',
              issue: [{ severity: 'error', code: 'not-found', diagnostics: 'file expired' }],
            }),
          );
        } else {
          res.writeHead(200);
          res.end(ndjson({ resourceType: 'Patient', id: 'a' }));
        }
      });
      const origin = ehr.value.origin;
      const { client, centre, log } = clientFor(origin);
      let kept: PendingExport | null = {
        request: buildExportUrl(client.baseUrl, centre).href,
        bound: null,
        statusUrl: `${origin}/status/old`,
        startedAt: Date.now() - 60_000,
      };
      const store: PendingExportStore = {
        load: () => Promise.resolve(kept),
        save: (p) => {
          kept = p;
          return Promise.resolve();
        },
        clear: (u) => {
          if (kept?.statusUrl === u) kept = null;
          return Promise.resolve();
        },
      };
      const manifests: string[] = [];
      const { items, error } = await run({
        client,
        centre,
        pending: store,
        logger: log.logger,
        onManifest: (m) => manifests.push(m.transactionTime),
      });
      expect(error).toBeUndefined();
      expect(ids(items)).toEqual(['Patient/a']);
      expect(kickOffsSeen).toBe(1);
      expect(ehr.value.requests.filter((r) => r.method === 'DELETE').map((r) => r.path)).toEqual([
        '/status/old',
        '/status/new',
      ]);
      // The new export's manifest is the last told (its transactionTime is the watermark).
      expect(manifests).toEqual(['2025-01-01T00:00:00Z', '2025-01-02T00:00:00Z']);
      expect(kept).toBeNull();
      expect(log.text()).toMatch(/files of the resumed bulk export cannot be read/);
    },
  );

  it('when a job this run kicked off has a first file answering 404, then the pull fails (no new export)', async () => {
    const ehr = await exportServer((origin) => ({
      transactionTime: '2025-01-01T00:00:00Z',
      output: [{ type: 'Patient', url: `${origin}/files/missing.ndjson` }],
    }));
    const { client, centre } = clientFor(ehr.origin);
    const { error } = await run({ client, centre });
    expect(error).toMatchObject({ name: 'FhirHttpError', status: 404 });
    expect(ehr.requests.filter((r) => r.path.endsWith('/$export'))).toHaveLength(1);
  });
});

describe('NDJSON lines', () => {
  /** A response whose body arrives in exactly these chunks (strings or raw bytes). */
  const chunked = (chunks: (string | Uint8Array)[]) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          for (const c of chunks)
            controller.enqueue(typeof c === 'string' ? new TextEncoder().encode(c) : c);
          controller.close();
        },
      }),
    );
  const file = { url: 'https://ehr.example/files/obs.ndjson', type: 'Observation' };
  const lines = async (response: Response, max?: number) => {
    const out: string[] = [];
    for await (const line of readLines(response, file, max)) out.push(line);
    return out;
  };

  it('when a line spans many chunks, with CRLF ends split between chunks, a BOM and a multi-byte character cut in two, then the lines come out whole', async () => {
    const long = JSON.stringify({ resourceType: 'Observation', id: 'x'.repeat(10_000) });
    const pieces: (string | Uint8Array)[] = [new Uint8Array([0xef, 0xbb, 0xbf])];
    for (let i = 0; i < long.length; i += 7) pieces.push(long.slice(i, i + 7));
    const e = new TextEncoder().encode('{"é":1}');
    pieces.push('\r', '\n', e.slice(0, 3), e.slice(3), '\r\n', 'last-no-newline');
    expect(await lines(chunked(pieces))).toEqual([long, '{"é":1}', 'last-no-newline']);
  });

  it('when lines are short and many per chunk, then each is yielded once, empty lines included', async () => {
    expect(await lines(chunked(['a\nb\r\n\nc', 'd\n', '\n']))).toEqual(['a', 'b', '', 'cd', '']);
  });

  it('when a line is longer than the cap, then the file fails naming the file and line, not its content', async () => {
    const secret = 'PATIENT-NAME-' + 'y'.repeat(100);
    const response = chunked(['{"ok":1}\n', secret.slice(0, 50), secret.slice(50), '\n']);
    const error = await lines(response, 64).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MalformedFhirResponseError);
    const message = (error as Error).message;
    expect(message).toMatch(/line 2 of the Observation export file is longer than 64 characters/);
    expect(message).toContain('files/obs.ndjson');
    expect(message).not.toContain('PATIENT-NAME');
    // Exactly at the cap (plus a CR) is fine.
    expect(await lines(chunked(['z'.repeat(64) + '\r\n']), 64)).toEqual(['z'.repeat(64)]);
    expect(MAX_NDJSON_LINE_LENGTH).toBe(64 * 1024 * 1024);
  });

  it('when a bulk file has one line of several MB in 64 KB chunks, then the resource is read whole', async () => {
    const big = JSON.stringify({
      resourceType: 'Observation',
      id: 'big',
      note: 'x'.repeat(4 << 20),
    });
    const ehr: { value?: Ehr } = {};
    ehr.value = await serve((req, res, url) => {
      const origin = ehr.value!.origin;
      if (url.pathname.endsWith('/$export')) {
        res.writeHead(202, { 'content-location': `${origin}/status/1` }).end();
      } else if (url.pathname === '/status/1') {
        res.writeHead(req.method === 'DELETE' ? 202 : 200);
        res.end(
          req.method === 'DELETE'
            ? ''
            : JSON.stringify({
                transactionTime: '2025-01-01T00:00:00Z',
                output: [{ type: 'Observation', url: `${origin}/files/big.ndjson` }],
              }),
        );
      } else {
        res.writeHead(200);
        const body = big + '\n';
        let i = 0;
        const pump = () => {
          while (i < body.length) if (!res.write(body.slice(i, (i += 65_536)))) return;
          res.end();
        };
        res.on('drain', pump);
        pump();
      }
    });
    const { client, centre } = clientFor(ehr.value.origin);
    const { items, error } = await run({ client, centre });
    expect(error).toBeUndefined();
    expect(items).toHaveLength(1);
    expect(JSON.stringify((items[0] as { resource: unknown }).resource)).toBe(big);
  });
});

describe('the kick-off time in the manifest summary', () => {
  const manifestOf = (origin: string) => ({
    transactionTime: '2025-01-01T12:00:00Z',
    output: [{ type: 'Patient', url: `${origin}/files/p.ndjson` }],
  });
  const files = { '/files/p.ndjson': ndjson({ resourceType: 'Patient', id: 'a' }) };
  const memoryStore = (initial: PendingExport | null) => {
    const state = { kept: initial, saved: [] as PendingExport[] };
    const store: PendingExportStore = {
      load: () => Promise.resolve(state.kept),
      save: (p) => {
        state.kept = p;
        state.saved.push(p);
        return Promise.resolve();
      },
      clear: (u) => {
        if (state.kept?.statusUrl === u) state.kept = null;
        return Promise.resolve();
      },
    };
    return { state, store };
  };

  it('when this run kicks the export off, then kickedOffAt is the local clock before the kick-off, as kept in the pending record', async () => {
    const ehr = await exportServer(manifestOf, files);
    const { client, centre } = clientFor(ehr.origin);
    let clock = Date.parse('2025-01-01T11:00:00Z');
    let clockAtManifest = 0;
    const { state, store } = memoryStore(null);
    const summaries: BulkManifestSummary[] = [];
    const { error } = await run({
      client,
      centre,
      pending: store,
      now: () => (clock += 1_000),
      onManifest: (m) => {
        summaries.push(m);
        clockAtManifest = clock;
      },
    });
    expect(error).toBeUndefined();
    expect(summaries).toHaveLength(1);
    const kickedOffAt = summaries[0]!.kickedOffAt!;
    expect(kickedOffAt).toBeGreaterThan(Date.parse('2025-01-01T11:00:00Z'));
    expect(kickedOffAt).toBeLessThan(clockAtManifest);
    expect(state.saved.map((p) => p.startedAt)).toEqual([kickedOffAt]);
  });

  it('when the run resumes a kept export, then kickedOffAt is the original kick-off, not the resume', async () => {
    const ehr = await exportServer(manifestOf, files);
    const { client, centre } = clientFor(ehr.origin);
    const original = Date.now() - 20 * 60_000;
    const { store } = memoryStore({
      request: buildExportUrl(client.baseUrl, centre).href,
      bound: null,
      statusUrl: `${ehr.origin}/status/1`,
      startedAt: original,
    });
    const summaries: BulkManifestSummary[] = [];
    const { items, error } = await run({
      client,
      centre,
      pending: store,
      onManifest: (m) => summaries.push(m),
    });
    expect(error).toBeUndefined();
    expect(ids(items)).toEqual(['Patient/a']);
    expect(ehr.requests.filter((r) => r.path.endsWith('/$export'))).toHaveLength(0);
    expect(summaries.map((s) => s.kickedOffAt)).toEqual([original]);
  });
});
