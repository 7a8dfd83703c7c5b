// Outbound HTTP through a hospital's forward proxy. Hospital networks often reach the
// internet (a cloud EHR, the registry, an alert webhook) only through an HTTP proxy named
// in HTTPS_PROXY, with NO_PROXY listing what is reached directly. Node's own fetch ignores
// those variables (before Node 24), so when a proxy is configured, requests that should go
// through it use undici's fetch with a ProxyAgent (CONNECT tunnel; TLS still ends at the
// real server, so the proxy never sees tokens or data), and all others use the global fetch.
import { ProxyAgent, fetch as undiciFetch } from 'undici';
import type { ServiceConfig } from '../config/service.js';

type OutboundConfig = ServiceConfig['outbound'];

interface NoProxyEntry {
  host: string;
  port: string | undefined;
  /** `.example.org`: subdomains only. */
  subdomainsOnly: boolean;
}

function parseNoProxy(noProxy: string): NoProxyEntry[] | '*' {
  const entries: NoProxyEntry[] = [];
  for (const raw of noProxy.split(/[\s,]+/)) {
    const item = raw.trim().toLowerCase();
    if (item === '') continue;
    if (item === '*') return '*';
    // host, host:port, [v6]:port, .domain, *.domain
    let host = item;
    let port: string | undefined;
    const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(item);
    if (bracket) {
      host = bracket[1]!;
      port = bracket[2];
    } else if (/^[^:]+:\d+$/.test(item)) {
      [host, port] = item.split(':') as [string, string];
    }
    const subdomainsOnly = host.startsWith('.') || host.startsWith('*.');
    entries.push({ host: host.replace(/^\*?\./, ''), port, subdomainsOnly });
  }
  return entries;
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '::1' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

/** The matcher of a NO_PROXY-style list (parsed once): true for URLs reached directly. */
function createBypass(noProxy: string): (url: URL) => boolean {
  const entries = parseNoProxy(noProxy);
  return (url) => {
    if (isLoopback(url.hostname)) return true;
    if (entries === '*') return true;
    const host = url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
    const port = url.port || (url.protocol === 'https:' ? '443' : '80');
    return entries.some(
      (e) =>
        (e.port === undefined || e.port === port) &&
        ((!e.subdomainsOnly && host === e.host) || host.endsWith(`.${e.host}`)),
    );
  };
}

/** Whether `url` is reached directly (loopback, or matched by the NO_PROXY-style list). */
export function bypassesProxy(url: URL, noProxy: string): boolean {
  return createBypass(noProxy)(url);
}

/** The proxy URL without credentials, for logs and messages. */
export function describeProxy(proxyUrl: string): string {
  const url = new URL(proxyUrl);
  return `${url.protocol}//${url.host}`;
}

/** The HTTP status a proxy answered a CONNECT with, found in undici's error chain. */
function proxyStatusOf(err: unknown): number | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 6 && typeof current === 'object' && current !== null; depth++) {
    const message = (current as { message?: unknown }).message;
    const m = typeof message === 'string' ? /Proxy response \((\d{3})\)/.exec(message) : null;
    if (m) return Number(m[1]);
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * A proxy that refused the tunnel, as fetch reports network failures (TypeError "fetch
 * failed" with a coded cause), but saying what the proxy answered and what to check.
 * PROXY_UNAVAILABLE (5xx: the proxy could not reach the host) is retried; PROXY_REFUSED not.
 */
function proxyRefusedError(status: number, proxy: string, target: URL, cause: unknown): TypeError {
  const reason =
    status === 407
      ? 'proxy authentication required: check the user and password in the proxy URL'
      : status === 403
        ? `the proxy does not allow ${target.host}: ask for it to be allowed, or list it in NO_PROXY if it is reached directly`
        : status >= 500
          ? `the proxy could not reach ${target.host}`
          : 'the proxy refused the tunnel';
  const detail = Object.assign(
    new Error(`proxy ${proxy} answered HTTP ${status}: ${reason}`, { cause }),
    {
      code: status >= 500 ? 'PROXY_UNAVAILABLE' : 'PROXY_REFUSED',
    },
  );
  return new TypeError(`fetch failed: ${detail.message}`, { cause: detail });
}

/**
 * The fetch every outbound client uses: the global fetch when no proxy is configured,
 * else one that sends each request through the proxy unless it bypasses it.
 */
export function createOutboundFetch(config: OutboundConfig): typeof fetch {
  if (!config.proxyUrl) return globalThis.fetch;
  const agent = new ProxyAgent({ uri: config.proxyUrl });
  const bypass = createBypass(config.noProxy);
  const proxyLabel = describeProxy(config.proxyUrl);
  const outbound = (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    if (bypass(url)) return globalThis.fetch(input, init);
    if (input instanceof Request)
      throw new TypeError('the outbound fetch takes a URL and options, not a Request');
    // undici's own fetch with its own agent (one version), typed as the global fetch.
    const pending = undiciFetch(url, { ...(init as object), dispatcher: agent }).catch(
      (err: unknown) => {
        const status = proxyStatusOf(err);
        throw status === undefined ? err : proxyRefusedError(status, proxyLabel, url, err);
      },
    );
    return pending as unknown as Promise<Response>;
  };
  return outbound;
}
