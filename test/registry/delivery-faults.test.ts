// Delivery answers and failures whose handling decides ordering or what a viewer reads: a
// gateway's own 500/503 after it forwarded the request, credentials fetch refuses to send
// (their error quotes them), and a 2xx whose body was cut off.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import {
  createRegistryClient,
  RegistryUnavailableError,
  type RegistryConfig,
} from '../../src/registry/delivery.js';
import { startSandboxRegistry } from '../../src/sandbox/registry/index.js';
import { makeVisit } from '../sync/helpers.js';

function config(url: string, extra: Partial<RegistryConfig> = {}): RegistryConfig {
  return { url, auth: { type: 'none' }, timeoutMs: 2_000, ...extra };
}

async function serve(
  answer: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ url: string; requests: () => number; close: () => void }> {
  let requests = 0;
  const server = createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => answer(req, res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests: () => requests,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

async function failure(
  client: ReturnType<typeof createRegistryClient>,
): Promise<RegistryUnavailableError> {
  const err = await client
    .deliver(makeVisit({ patientId: 'p1', encounterId: 'e1' }))
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(RegistryUnavailableError);
  return err as RegistryUnavailableError;
}

describe('a 500 or 503 that may be a gateway answer', () => {
  it.each([
    [500, 'text/html', '<html><body>Application error</body></html>', true],
    [503, 'text/html', '<html><body>Application error</body></html>', true],
    [503, 'text/plain', 'upstream request timeout', true],
    [503, 'application/json', '{"message":"Service Unavailable"}', true],
    [503, 'application/problem+json', 'not json', true],
    [500, 'application/problem+json', '{"title":"Internal Server Error"}', false],
    [503, 'application/problem+json; charset=utf-8', '{"title":"Service Unavailable"}', false],
  ])(
    'when the answer is %i with %s (%s), then the outcome unknown is %s',
    async (status, type, body, unknown) => {
      const server = await serve((_req, res) =>
        res.writeHead(status, { 'content-type': type }).end(body),
      );
      try {
        const err = await failure(createRegistryClient({ config: config(server.url) }));
        expect(err.httpStatus).toBe(status);
        expect(err.outcomeUnknown).toBe(unknown);
      } finally {
        server.close();
      }
    },
  );

  it('when the sandbox registry answers its own 503, then it is not in doubt', async () => {
    const registry = await startSandboxRegistry();
    try {
      registry.faults.unavailableFor(1);
      const err = await failure(createRegistryClient({ config: config(registry.url) }));
      expect(err.httpStatus).toBe(503);
      expect(err.outcomeUnknown).toBe(false);
    } finally {
      await registry.close();
    }
  });
});

describe('credentials fetch refuses to send', () => {
  it('when registry.url has user:password, then the reason names the setting, not the password, and nothing is in doubt', async () => {
    const server = await serve((_req, res) => res.writeHead(201).end('{"status":"created"}'));
    try {
      const url = server.url.replace('http://', 'http://reguser:REGPASS@');
      const err = await failure(createRegistryClient({ config: config(url) }));
      expect(err.message).toMatch(/registry\.url must not contain user:password/);
      expect(err.message).not.toContain('REGPASS');
      expect(err.message).not.toMatch(/unreachable/);
      expect(err.outcomeUnknown).toBe(false);
      expect(server.requests()).toBe(0);
    } finally {
      server.close();
    }
  });

  it('when the bearer token has a line break, then the reason does not quote it, and nothing is in doubt', async () => {
    const server = await serve((_req, res) => res.writeHead(201).end('{"status":"created"}'));
    try {
      const err = await failure(
        createRegistryClient({
          config: config(server.url, {
            auth: { type: 'bearer', token: 'TOKENPART1abcdef\nTOKENPART2' },
          }),
        }),
      );
      expect(err.message).toMatch(/registry\.auth\.token .*HTTP header/);
      expect(err.message).not.toContain('TOKENPART');
      expect(err.outcomeUnknown).toBe(false);
      expect(server.requests()).toBe(0);
    } finally {
      server.close();
    }
  });

  it.each([
    ['a line break', 'ACCESSPART1\nACCESSPART2'],
    ['a carriage return', 'ACCESSPART1\rACCESSPART2'],
    ['a NUL', 'ACCESSPART1\u0000ACCESSPART2'],
  ])(
    'when the token endpoint gives an access token with %s, then delivery fails without quoting it, and nothing is in doubt',
    async (_what, accessToken) => {
      const server = await serve((req, res) => {
        if (req.url === '/token')
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(JSON.stringify({ access_token: accessToken, expires_in: 300 }));
        else res.writeHead(201).end('{"status":"created"}');
      });
      try {
        const err = await failure(
          createRegistryClient({
            config: config(server.url, {
              auth: {
                type: 'client-credentials',
                tokenUrl: `${server.url}/token`,
                clientId: 'bridge',
                clientSecret: 'cs',
              },
            }),
          }),
        );
        expect(err.message).toMatch(/access_token with a character not allowed in an HTTP header/);
        expect(err.message).not.toContain('ACCESSPART');
        expect(err.outcomeUnknown).toBe(false);
        // Only the token request: the submission was never posted.
        expect(server.requests()).toBe(1);
      } finally {
        server.close();
      }
    },
  );

  it('when the token URL has user:password, then the reason names the setting, not the password', async () => {
    const server = await serve((_req, res) => res.writeHead(201).end('{"status":"created"}'));
    try {
      const err = await failure(
        createRegistryClient({
          config: config(server.url, {
            auth: {
              type: 'client-credentials',
              tokenUrl: `${server.url.replace('http://', 'http://tokuser:TOKPASS@')}/token`,
              clientId: 'bridge',
              clientSecret: 'cs',
            },
          }),
        }),
      );
      expect(err.message).toMatch(/registry\.auth\.tokenUrl must not contain user:password/);
      expect(err.message).not.toContain('TOKPASS');
      expect(server.requests()).toBe(0);
    } finally {
      server.close();
    }
  });

  it("when fetch refuses the request itself, then fetch's message (which quotes URL or header) is not copied and the request counts as not sent", async () => {
    const client = createRegistryClient({
      config: config('http://127.0.0.1:9/'),
      fetch: () =>
        Promise.reject(
          new TypeError('Headers.append: "Bearer LEAKED\nVALUE" is an invalid header value.'),
        ),
    });
    const err = await failure(client);
    expect(err.message).not.toContain('LEAKED');
    expect(err.message).toMatch(/could not be made \(nothing was sent\)/);
    expect(err.message).not.toMatch(/unreachable/);
    expect(err.outcomeUnknown).toBe(false);
  });

  it("when a network error's message holds a URL, then only its code is given", async () => {
    const client = createRegistryClient({
      config: config('http://127.0.0.1:9/'),
      fetch: () =>
        Promise.reject(
          Object.assign(new TypeError('connect failed http://u:LEAKED@127.0.0.1:9/'), {
            cause: { code: 'ECONNRESET', message: 'LEAKED' },
          }),
        ),
    });
    const err = await failure(client);
    expect(err.message).toBe('registry unreachable: fetch failed (ECONNRESET)');
    expect(err.outcomeUnknown).toBe(true);
  });
});

describe('a 2xx whose body is cut off', () => {
  it('when the connection is reset mid-body, then the reason says the body could not be read, and the outcome is unknown', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': '200' });
      res.write('{"status":"cre');
      setTimeout(() => res.socket?.destroy(), 50);
    });
    try {
      const err = await failure(createRegistryClient({ config: config(server.url) }));
      expect(err.httpStatus).toBe(201);
      expect(err.message).toMatch(
        /HTTP 201 but its body could not be read whole \(the connection broke/,
      );
      expect(err.message).not.toMatch(/empty body/);
      expect(err.outcomeUnknown).toBe(true);
    } finally {
      server.close();
    }
  });

  it('when the body does not arrive within the timeout, then the reason says it timed out, and the outcome is unknown', async () => {
    const server = await serve((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.write('{"status":');
    });
    try {
      const err = await failure(
        createRegistryClient({ config: config(server.url, { timeoutMs: 300 }) }),
      );
      expect(err.message).toMatch(
        /HTTP 201 but its body could not be read whole \(timed out after 300 ms\)/,
      );
      expect(err.outcomeUnknown).toBe(true);
    } finally {
      server.close();
    }
  });
});
