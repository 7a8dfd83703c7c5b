// Outbound requests through a forward proxy: a real CONNECT proxy on loopback in front of
// the sandbox registry. The registry is addressed by a made-up name that only the proxy
// resolves (to 127.0.0.1), so a request that skipped the proxy could not arrive at all.
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadOutboundConfig, loadServiceConfig } from '../../src/config/service.js';
import { createRegistryClient } from '../../src/registry/delivery.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { bypassesProxy, createOutboundFetch, describeProxy } from '../../src/util/outbound.js';
import { isRetryableNetworkCode, networkErrorCode } from '../../src/fhir/retry.js';
import { SECRET, makeVisit } from '../sync/helpers.js';

const REGISTRY_HOST = 'registry.lhn-proxy.test';

interface TestProxy {
  url: string;
  /** `host:port` of every CONNECT, with the Proxy-Authorization it carried. */
  tunnels: { target: string; auth: string | undefined }[];
  close(): Promise<void>;
}

async function startProxy(requiredAuth?: string): Promise<TestProxy> {
  const tunnels: TestProxy['tunnels'] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((_req, res) => {
    res.writeHead(405).end('this test proxy only tunnels (CONNECT)');
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('connect', (req, client: Socket, head: Buffer) => {
    const target = req.url ?? '';
    const auth = req.headers['proxy-authorization'];
    tunnels.push({ target, auth });
    if (requiredAuth && auth !== requiredAuth) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\n\r\n');
      return;
    }
    const [host, port] = target.split(':');
    // Only the test's made-up name resolves, and only to loopback.
    if (host !== REGISTRY_HOST) {
      client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n');
      return;
    }
    const upstream = connect(Number(port), '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    tunnels,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('outbound requests through a proxy', () => {
  let registry: SandboxRegistry;
  let proxy: TestProxy;
  beforeAll(async () => {
    registry = await startSandboxRegistry();
    proxy = await startProxy();
  });
  afterAll(async () => {
    await proxy?.close();
    await registry?.close();
  });
  beforeEach(() => {
    registry.reset();
    proxy.tunnels.length = 0;
  });

  const registryUrl = () => registry.url.replace('127.0.0.1', REGISTRY_HOST);

  it('when a proxy is configured, then a registry delivery goes through a CONNECT tunnel and arrives', async () => {
    const client = createRegistryClient({
      config: { url: registryUrl(), auth: { type: 'none' }, timeoutMs: 5_000 },
      fetch: createOutboundFetch({ proxyUrl: proxy.url, noProxy: '' }),
    });
    const visit = makeVisit({ patientId: 'p1', encounterId: 'e1' });
    await expect(client.deliver(visit)).resolves.toMatchObject({ status: 'accepted' });
    expect(registry.visits()).toHaveLength(1);
    expect(proxy.tunnels.map((t) => t.target)).toContain(new URL(registryUrl()).host);
  });

  it('when the proxy URL carries credentials, then they go as Proxy-Authorization and never into logs', async () => {
    const guarded = await startProxy(`Basic ${Buffer.from('bridge:s3cret').toString('base64')}`);
    try {
      const proxyUrl = guarded.url.replace('http://', 'http://bridge:s3cret@');
      const client = createRegistryClient({
        config: { url: registryUrl(), auth: { type: 'none' }, timeoutMs: 5_000 },
        fetch: createOutboundFetch({ proxyUrl, noProxy: '' }),
      });
      await expect(
        client.deliver(makeVisit({ patientId: 'p1', encounterId: 'e2' })),
      ).resolves.toMatchObject({ status: 'accepted' });
      expect(guarded.tunnels[0]!.auth).toBe(
        `Basic ${Buffer.from('bridge:s3cret').toString('base64')}`,
      );
      expect(describeProxy(proxyUrl)).toBe(guarded.url);
    } finally {
      await guarded.close();
    }
  });

  it('when the proxy refuses the tunnel, then the error says what it answered and whether a retry can help', async () => {
    const guarded = await startProxy('Basic nope');
    try {
      const client = createRegistryClient({
        config: { url: registryUrl(), auth: { type: 'none' }, timeoutMs: 5_000 },
        fetch: createOutboundFetch({
          proxyUrl: guarded.url.replace('//', '//bridge:wrong@'),
          noProxy: '',
        }),
      });
      const refused = await client
        .deliver(makeVisit({ patientId: 'p1', encounterId: 'e4' }))
        .catch((e: unknown) => e);
      expect((refused as Error).message).toMatch(
        /proxy http:\/\/127\.0\.0\.1:\d+ answered HTTP 407: proxy authentication required/,
      );
      expect((refused as Error).message).not.toContain('wrong');
    } finally {
      await guarded.close();
    }
    // The test proxy answers 502 for any host it cannot reach.
    const outbound = createOutboundFetch({ proxyUrl: proxy.url, noProxy: '' });
    const unreachable = await outbound('https://elsewhere.lhn-proxy.test/').catch(
      (e: unknown) => e,
    );
    expect(unreachable).toBeInstanceOf(TypeError);
    expect(networkErrorCode(unreachable)).toBe('PROXY_UNAVAILABLE');
    expect(isRetryableNetworkCode('PROXY_UNAVAILABLE')).toBe(true);
    expect(isRetryableNetworkCode('PROXY_REFUSED')).toBe(false);
  });

  it('when the target is loopback or listed in noProxy, then the request does not use the proxy', async () => {
    const outbound = createOutboundFetch({ proxyUrl: proxy.url, noProxy: '' });
    const response = await outbound(`${registry.url}/health`);
    await response.body?.cancel();
    expect(proxy.tunnels).toEqual([]);
    // Listed in noProxy, the made-up name is handed to the global fetch, not the proxy
    // (recorded here instead of resolved, so no lookup leaves the machine).
    const seen: string[] = [];
    const globalFetch = globalThis.fetch;
    globalThis.fetch = async (input: string | URL | Request) => {
      seen.push(input instanceof Request ? input.url : input.toString());
      return new Response('{}', { status: 201 });
    };
    try {
      const direct = createOutboundFetch({ proxyUrl: proxy.url, noProxy: '.lhn-proxy.test' });
      await direct(`${registryUrl()}/submissions`, { method: 'POST', body: '{}' });
    } finally {
      globalThis.fetch = globalFetch;
    }
    expect(seen).toEqual([`${registryUrl()}/submissions`]);
    expect(proxy.tunnels).toEqual([]);
  });

  it('when noProxy entries are matched, then names cover subdomains, dots only subdomains, ports only that port', () => {
    const u = (s: string) => new URL(s);
    expect(bypassesProxy(u('https://localhost:8443/x'), '')).toBe(true);
    expect(bypassesProxy(u('http://127.0.0.9/'), '')).toBe(true);
    expect(bypassesProxy(u('http://[::1]:80/'), '')).toBe(true);
    expect(bypassesProxy(u('https://ehr.hospital.org/'), '')).toBe(false);
    expect(bypassesProxy(u('https://ehr.hospital.org/'), 'hospital.org')).toBe(true);
    expect(bypassesProxy(u('https://hospital.org/'), 'hospital.org')).toBe(true);
    expect(bypassesProxy(u('https://hospital.org/'), '.hospital.org')).toBe(false);
    expect(bypassesProxy(u('https://fhir.hospital.org/'), '*.hospital.org')).toBe(true);
    expect(bypassesProxy(u('https://nothospital.org/'), 'hospital.org')).toBe(false);
    expect(bypassesProxy(u('https://ehr.hospital.org/'), 'ehr.hospital.org:8443')).toBe(false);
    expect(bypassesProxy(u('https://ehr.hospital.org:8443/'), 'ehr.hospital.org:8443')).toBe(true);
    expect(bypassesProxy(u('https://ehr.hospital.org/'), 'ehr.hospital.org:443')).toBe(true);
    expect(bypassesProxy(u('https://10.1.2.3/'), 'a.example, 10.1.2.3')).toBe(true);
    expect(bypassesProxy(u('https://registry.example/'), '*')).toBe(true);
  });

  it('when proxy variables are set, then LHN_ names win, lower case over upper, HTTPS over HTTP', () => {
    const secret = { LHN_PSEUDONYM_SECRET: SECRET };
    const from = (env: Record<string, string>) => loadServiceConfig({ ...secret, ...env }).outbound;
    expect(from({})).toEqual({ noProxy: '' });
    expect(from({ HTTP_PROXY: 'http://a:1', HTTPS_PROXY: 'http://b:2' }).proxyUrl).toBe(
      'http://b:2',
    );
    expect(from({ HTTPS_PROXY: 'http://b:2', https_proxy: 'http://c:3' }).proxyUrl).toBe(
      'http://c:3',
    );
    expect(
      from({
        https_proxy: 'http://c:3',
        LHN_PROXY_URL: 'http://d:4',
        NO_PROXY: '.x',
        LHN_NO_PROXY: '.y',
      }),
    ).toEqual({ proxyUrl: 'http://d:4', noProxy: '.y' });
    expect(loadOutboundConfig({ HTTPS_PROXY: 'http://b:2', no_proxy: 'ehr.local' })).toEqual({
      proxyUrl: 'http://b:2',
      noProxy: 'ehr.local',
    });
    expect(loadOutboundConfig({ HTTPS_PROXY: 'proxy.hospital.org:3128' }).proxyUrl).toBe(
      'http://proxy.hospital.org:3128',
    );
    expect(() => loadOutboundConfig({ HTTPS_PROXY: 'socks5://b:2' })).toThrow(
      /outbound\.proxyUrl: expected an http:\/\/ or https:\/\/ proxy URL/,
    );
  });
});
