import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import { createServer } from 'node:net';
import {
  createServer as createHttpServer,
  type IncomingHttpHeaders,
  type ServerResponse,
} from 'node:http';
import { UnrecoverableError } from 'bullmq';
import {
  createRegistryClient,
  RegistryRejectedError,
  RegistryUnavailableError,
  type RegistryConfig,
} from '../../src/registry/delivery.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { makeVisit } from '../sync/helpers.js';

function config(url: string, extra: Partial<RegistryConfig> = {}): RegistryConfig {
  return { url, auth: { type: 'none' }, timeoutMs: 2_000, ...extra };
}

function urlOf(input: Parameters<typeof fetch>[0]): string {
  return input instanceof Request ? input.url : input instanceof URL ? input.href : input;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('registry delivery', () => {
  let registry: SandboxRegistry;
  beforeAll(async () => {
    registry = await startSandboxRegistry();
  });
  afterAll(async () => {
    await registry.close();
  });
  beforeEach(() => {
    registry.reset();
    registry.faults.clear();
  });

  it('when the registry accepts, then the outcome is accepted and the visit is stored', async () => {
    const client = createRegistryClient({ config: config(registry.url) });
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    await expect(client.deliver(visit)).resolves.toEqual({ status: 'accepted', httpStatus: 201 });
    expect(registry.visits()).toHaveLength(1);
  });

  it('when the same submission is delivered again, then it is a duplicate (done), not an error', async () => {
    const client = createRegistryClient({ config: config(registry.url) });
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    await client.deliver(visit);
    await expect(client.deliver(visit)).resolves.toMatchObject({ status: 'duplicate' });
    expect(registry.submissions()).toHaveLength(1);
  });

  it('when the registry rejects with 400, then a RegistryRejectedError (unrecoverable) carries its reason', async () => {
    const client = createRegistryClient({ config: config(registry.url) });
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    registry.faults.rejectSubmission(visit.submissionId, 'height out of range for age');
    const err = await client.deliver(visit).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryRejectedError);
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect((err as Error).name).toBe('UnrecoverableError');
    expect((err as Error).message).toContain('height out of range for age');
  });

  it('when the registry answers 503, then a retryable RegistryUnavailableError is thrown', async () => {
    const client = createRegistryClient({ config: config(registry.url) });
    registry.faults.unavailableFor(1);
    const err = await client
      .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryUnavailableError);
    expect(err).not.toBeInstanceOf(UnrecoverableError);
    expect((err as RegistryUnavailableError).httpStatus).toBe(503);
  });

  it('when the registry is slower than the timeout, then the delivery fails as retryable', async () => {
    const client = createRegistryClient({ config: config(registry.url, { timeoutMs: 100 }) });
    registry.faults.delayMs(500);
    const err = await client
      .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryUnavailableError);
    expect((err as Error).message).toMatch(/timed out/);
    // The registry may still store it: the outcome is unknown.
    expect((err as RegistryUnavailableError).outcomeUnknown).toBe(true);
  });

  it('when nothing listens at the registry URL, then the delivery fails as retryable', async () => {
    const port = await closedPort();
    const client = createRegistryClient({ config: config(`http://127.0.0.1:${port}`) });
    const err = await client
      .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryUnavailableError);
    // Nothing was sent: the outcome is known (not stored).
    expect((err as RegistryUnavailableError).outcomeUnknown).toBe(false);
  });

  it('when no registry URL is configured, then creating the client says which setting is missing', () => {
    expect(() =>
      createRegistryClient({ config: { auth: { type: 'none' }, timeoutMs: 1000 } }),
    ).toThrow(/LHN_REGISTRY_URL/);
  });
});

describe('registry delivery with auth', () => {
  let registry: SandboxRegistry;
  beforeAll(async () => {
    registry = await startSandboxRegistry({
      token: 'static-token',
      clientCredentials: { clientId: 'bridge', clientSecret: 's3cret', expiresInSeconds: 60 },
    });
  });
  afterAll(async () => {
    await registry.close();
  });

  it('when auth is a configured bearer token, then it is sent and accepted', async () => {
    const client = createRegistryClient({
      config: config(registry.url, { auth: { type: 'bearer', token: 'static-token' } }),
    });
    await expect(
      client.deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' })),
    ).resolves.toMatchObject({ status: 'accepted' });
  });

  it('when auth is wrong, then the delivery stays retryable (an operator can fix it) and names the status', async () => {
    const client = createRegistryClient({
      config: config(registry.url, { auth: { type: 'bearer', token: 'wrong' } }),
    });
    const err = await client
      .deliver(makeVisit({ patientId: 'p1', encounterId: 'e9' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryUnavailableError);
    expect((err as Error).message).toContain('401');
    expect((err as Error).message).not.toContain('wrong');
  });

  it('when auth is client credentials, then one token is fetched, cached and reused', async () => {
    let tokenRequests = 0;
    const counting: typeof fetch = (input, init) => {
      if (urlOf(input).endsWith('/oauth/token')) tokenRequests += 1;
      return fetch(input, init);
    };
    const client = createRegistryClient({
      fetch: counting,
      config: config(registry.url, {
        auth: {
          type: 'client-credentials',
          tokenUrl: registry.tokenUrl,
          clientId: 'bridge',
          clientSecret: 's3cret',
        },
      }),
    });
    await client.deliver(makeVisit({ patientId: 'p2', encounterId: 'e2' }));
    await client.deliver(makeVisit({ patientId: 'p2', encounterId: 'e3' }));
    expect(tokenRequests).toBe(1);
  });

  it('when the cached client-credentials token expires, then a new one is fetched', async () => {
    let tokenRequests = 0;
    let clock = Date.now();
    const counting: typeof fetch = (input, init) => {
      if (urlOf(input).endsWith('/oauth/token')) tokenRequests += 1;
      return fetch(input, init);
    };
    const client = createRegistryClient({
      fetch: counting,
      now: () => clock,
      config: config(registry.url, {
        auth: {
          type: 'client-credentials',
          tokenUrl: registry.tokenUrl,
          clientId: 'bridge',
          clientSecret: 's3cret',
        },
      }),
    });
    await client.deliver(makeVisit({ patientId: 'p3', encounterId: 'e4' }));
    clock += 61_000;
    await client.deliver(makeVisit({ patientId: 'p3', encounterId: 'e5' }));
    expect(tokenRequests).toBe(2);
  });

  it('when the client secret is wrong, then the error says the token request failed, without the secret', async () => {
    const client = createRegistryClient({
      config: config(registry.url, {
        auth: {
          type: 'client-credentials',
          tokenUrl: registry.tokenUrl,
          clientId: 'bridge',
          clientSecret: 'not-the-secret',
        },
      }),
    });
    const err = await client
      .deliver(makeVisit({ patientId: 'p4', encounterId: 'e6' }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryUnavailableError);
    expect((err as Error).message).toMatch(/token request failed \(HTTP 401\).*invalid_client/);
    expect((err as Error).message).not.toContain('not-the-secret');
  });
});

describe('registry delivery and redirects', () => {
  it('when the registry answers with a redirect, then it is not followed and the token goes nowhere else', async () => {
    const seenElsewhere: IncomingHttpHeaders[] = [];
    const elsewhere = createHttpServer((req, res) => {
      seenElsewhere.push(req.headers);
      res.writeHead(201).end('{}');
    });
    await new Promise<void>((r) => elsewhere.listen(0, '127.0.0.1', r));
    const otherPort = (elsewhere.address() as { port: number }).port;
    const redirecting = createHttpServer((req, res) => {
      req.resume();
      res.writeHead(307, { location: `http://127.0.0.1:${otherPort}/submissions` }).end();
    });
    await new Promise<void>((r) => redirecting.listen(0, '127.0.0.1', r));
    const port = (redirecting.address() as { port: number }).port;
    try {
      const client = createRegistryClient({
        config: config(`http://127.0.0.1:${port}`, {
          auth: { type: 'bearer', token: 'secret-token' },
        }),
      });
      const err = await client
        .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryUnavailableError);
      expect(seenElsewhere).toHaveLength(0);
    } finally {
      redirecting.close();
      elsewhere.close();
    }
  });
});

describe('registry answers that are not the contract', () => {
  async function serve(
    answer: (res: ServerResponse) => void,
  ): Promise<{ url: string; close: () => void }> {
    const server = createHttpServer((req, res) => {
      req.resume();
      req.on('end', () => answer(res));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    return { url: `http://127.0.0.1:${port}`, close: () => server.close() };
  }

  it('when a 2xx is not an ingest acknowledgement (login page, error JSON, empty), then delivery is retried, not counted as stored', async () => {
    const answers: [number, string, string][] = [
      [200, 'text/html', '<html><body>Sign in</body></html>'],
      [200, 'application/json', '{"status":"error","message":"ingest disabled"}'],
      [202, 'application/json', '{"status":"queued"}'],
      [204, 'application/json', ''],
    ];
    for (const [status, type, body] of answers) {
      const server = await serve((res) =>
        res.writeHead(status, { 'content-type': type }).end(body),
      );
      try {
        const err = await createRegistryClient({ config: config(server.url) })
          .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
          .catch((e: unknown) => e);
        expect(err, `${status} ${type}`).toBeInstanceOf(RegistryUnavailableError);
        expect((err as Error).message).toMatch(
          new RegExp(`HTTP ${status} without an ingest acknowledgement`),
        );
        expect((err as Error).message).not.toContain('Sign in');
      } finally {
        server.close();
      }
    }
  });

  it('when an error answer is not JSON, then the failed reason describes it (type, length) instead of quoting it (security review 12)', async () => {
    const page = '<html><body>Patient SMITH, ALICE not found at gateway</body></html>';
    for (const status of [400, 502]) {
      const server = await serve((res) =>
        res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' }).end(page),
      );
      try {
        const err = await createRegistryClient({ config: config(server.url) })
          .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
          .catch((e: unknown) => e);
        expect(err, String(status)).toBeInstanceOf(
          status === 400 ? RegistryRejectedError : RegistryUnavailableError,
        );
        expect((err as Error).message).toContain(
          `a body of ${page.length} characters, content type text/html`,
        );
        expect((err as Error).message).not.toMatch(/SMITH|html>/);
      } finally {
        server.close();
      }
    }
    // A JSON problem body keeps its reason.
    const server = await serve((res) =>
      res
        .writeHead(422, { 'content-type': 'application/problem+json' })
        .end('{"title":"Invalid","detail":"visit.date is in the future"}'),
    );
    try {
      const err = await createRegistryClient({ config: config(server.url) })
        .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
        .catch((e: unknown) => e);
      expect((err as Error).message).toContain('Invalid; visit.date is in the future');
    } finally {
      server.close();
    }
  });

  it('when a 2xx is an acknowledgement, then it is accepted (created, updated, retracted) or a duplicate', async () => {
    for (const [status, ack, expected] of [
      [201, 'created', 'accepted'],
      [200, 'updated', 'accepted'],
      [200, 'retracted', 'accepted'],
      [200, 'duplicate', 'duplicate'],
    ] as const) {
      const server = await serve((res) =>
        res
          .writeHead(status, { 'content-type': 'application/json' })
          .end(JSON.stringify({ status: ack })),
      );
      try {
        const outcome = await createRegistryClient({ config: config(server.url) }).deliver(
          makeVisit({ patientId: 'p1', encounterId: 'e1' }),
        );
        expect(outcome).toEqual({ status: expected, httpStatus: status });
      } finally {
        server.close();
      }
    }
  });

  it('when an acknowledgement names another submission, then it is not counted as stored', async () => {
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    for (const ack of [
      { status: 'created', submissionId: `${visit.submissionId.slice(0, -1)}0` },
      { status: 'updated', submissionId: visit.submissionId, visitKey: 'f'.repeat(64) },
      { status: 'duplicate', submissionId: 'another' },
    ]) {
      const server = await serve((res) =>
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(ack)),
      );
      try {
        const err = await createRegistryClient({ config: config(server.url) })
          .deliver(visit)
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(RegistryUnavailableError);
        expect((err as Error).message).toMatch(
          /with another (submissionId|visitKey) than the one sent/,
        );
      } finally {
        server.close();
      }
    }
    // An acknowledgement that echoes this submission's ids is stored.
    const server = await serve((res) =>
      res.writeHead(201, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          status: 'created',
          submissionId: visit.submissionId,
          visitKey: visit.visitKey,
        }),
      ),
    );
    try {
      await expect(
        createRegistryClient({ config: config(server.url) }).deliver(visit),
      ).resolves.toEqual({ status: 'accepted', httpStatus: 201 });
    } finally {
      server.close();
    }
  });

  it('when a 409 has the word duplicate but is not the duplicate acknowledgement, then it is retried, not counted as delivered', async () => {
    for (const [body, expected] of [
      ['{"title":"Conflict","detail":"this is not a duplicate"}', 'retried'],
      ['Duplicate visitKey with different content', 'retried'],
      ['{"status":"duplicate"}', 'duplicate'],
    ] as const) {
      const server = await serve((res) =>
        res.writeHead(409, { 'content-type': 'application/json' }).end(body),
      );
      try {
        const outcome = await createRegistryClient({ config: config(server.url) })
          .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
          .then(
            (o) => o.status,
            (e: unknown) => (e instanceof RegistryUnavailableError ? 'retried' : String(e)),
          );
        expect(outcome, body).toBe(expected);
      } finally {
        server.close();
      }
    }
  });

  it('when the registry TLS certificate is not trusted, then the error says so with the code and the request counts as not sent', async () => {
    const dir = new URL('./fixtures/', import.meta.url);
    const server = createHttpsServer(
      {
        key: readFileSync(new URL('self-signed.key.pem', dir)),
        cert: readFileSync(new URL('self-signed.cert.pem', dir)),
      },
      (_req, res) => res.writeHead(201).end('{"status":"created"}'),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const err = await createRegistryClient({ config: config(`https://127.0.0.1:${port}`) })
        .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryUnavailableError);
      expect((err as Error).message).toMatch(
        /TLS certificate was refused \(DEPTH_ZERO_SELF_SIGNED_CERT\).*NODE_EXTRA_CA_CERTS/,
      );
      // Refused in the handshake: nothing was sent, so the visit is not held in doubt.
      expect((err as RegistryUnavailableError).outcomeUnknown).toBe(false);
    } finally {
      server.close();
    }
  });

  it('when a gateway gives up after forwarding (502, 504, 520, 522, 524, 598, 599, or a 500/503 page that is not the registry problem+json), then the outcome is unknown; when it answered itself, it is not', async () => {
    const cases: [number, boolean][] = [
      [502, true],
      [504, true],
      [520, true],
      [522, true],
      [524, true],
      [598, true],
      [599, true],
      // An HTML 500/503 may be a gateway's own answer after it forwarded (delivery-faults.test.ts).
      [500, true],
      [503, true],
      [521, false],
      [523, false],
      [525, false],
    ];
    for (const [status, unknown] of cases) {
      const server = await serve((res) =>
        res.writeHead(status, { 'content-type': 'text/html' }).end('<html>gateway</html>'),
      );
      try {
        const err = await createRegistryClient({ config: config(server.url) })
          .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
          .catch((e: unknown) => e);
        expect(err, `HTTP ${status}`).toBeInstanceOf(RegistryUnavailableError);
        expect((err as RegistryUnavailableError).httpStatus).toBe(status);
        expect((err as RegistryUnavailableError).outcomeUnknown, `HTTP ${status}`).toBe(unknown);
      } finally {
        server.close();
      }
    }
  });

  it('when the registry redirects, then the error names the status and where it pointed', async () => {
    const server = await serve((res) =>
      res
        .writeHead(308, { location: 'https://registry.example.org/v2/submissions?sig=secret' })
        .end(),
    );
    try {
      const err = await createRegistryClient({ config: config(server.url) })
        .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryUnavailableError);
      expect((err as RegistryUnavailableError).httpStatus).toBe(308);
      expect((err as Error).message).toMatch(
        /HTTP 308, a redirect to https:\/\/registry\.example\.org\/v2\/submissions; .*registry\.url/,
      );
      expect((err as Error).message).not.toContain('secret');
    } finally {
      server.close();
    }
  });
});
