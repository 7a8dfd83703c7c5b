// A JSON answer must arrive whole within a few request timeouts: a gateway that trickles its
// body (a byte now and then, each pause shorter than the idle timeout) must not hold the
// request, its limiter slot and the centre's sync for ever. Loopback server on 127.0.0.1.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, expect, it } from 'vitest';
import { createFhirClient } from '../../src/fhir/client.js';
import { FhirNetworkError } from '../../src/fhir/errors.js';
import { bundle, createCapturingLogger, createTokenSource, makeCentre } from './helpers.js';

const servers: http.Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

it('when a search page trickles in slower than 4 request timeouts in all, then the request is cut there and fails as a timeout that says so', async () => {
  let requests = 0;
  const server = http.createServer((_req, res) => {
    requests += 1;
    res.writeHead(200, { 'content-type': 'application/fhir+json' });
    const patients = Array.from({ length: 10 }, (_, i) => ({
      resourceType: 'Patient',
      id: `p${i}`,
    }));
    const body = JSON.stringify(bundle(patients));
    let i = 0;
    // One character every 20 ms: never idle for the 1 s timeout, but over 10 s in all.
    const tick = setInterval(() => {
      if (res.destroyed) return clearInterval(tick);
      if (i >= body.length) {
        clearInterval(tick);
        return void res.end();
      }
      res.write(body[i++]);
    }, 20);
    res.on('close', () => clearInterval(tick));
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const client = createFhirClient({
    centre: makeCentre({ fhir: { baseUrl: `${origin}/fhir` } }),
    auth: createTokenSource(['token-1'], origin),
    logger: createCapturingLogger().logger,
    config: { maxRetries: 0, maxRetryAfterSeconds: 10, requestTimeoutMs: 1000 },
    retry: { sleep: () => Promise.resolve(), random: () => 0.5 },
  });
  const err = await (async () => {
    for await (const r of client.searchResources('Patient', {})) void r;
  })().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(FhirNetworkError);
  expect((err as Error).message).toMatch(/the answer did not arrive whole within 4000 ms/);
  expect(requests).toBe(1);
}, 20_000);
