// Outbound URLs of the service config are held to the rule of registry.url: the alert
// webhook (Slack / Teams carry their secret in the path) is https, or http to loopback only;
// api.publicUrl is http(s). A webhook that cannot be reached is logged with its cause
// (ECONNREFUSED...), never with the URL's path.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { failureCause } from '../../src/alerts/alert-monitor.js';
import { serviceConfigIssues } from './service-issues.js';

describe('service config URLs', () => {
  it.each([
    'ftp://alerts.example/x',
    'javascript:alert(1)',
    'http://hooks.example.org/services/T0/B0/secret',
  ])('when the alert webhook is %s, then it is refused', (url) => {
    const issues = serviceConfigIssues({ LHN_ALERT_WEBHOOK_URL: url });
    expect(issues.map((i) => i.path)).toEqual(['alerts.webhookUrl']);
    expect(issues[0]!.message).toContain('(set by LHN_ALERT_WEBHOOK_URL)');
    expect(issues[0]!.message).not.toContain('secret');
  });

  it.each(['https://hooks.example.org/services/T0/B0/x', 'http://127.0.0.1:9000/hook'])(
    'when the alert webhook is %s, then it is accepted',
    (url) => {
      expect(serviceConfigIssues({ LHN_ALERT_WEBHOOK_URL: url })).toEqual([]);
    },
  );

  it('when the public URL is not http(s), then it is refused', () => {
    expect(
      serviceConfigIssues({ LHN_PUBLIC_URL: 'ftp://bridge.example.org' }).map((i) => i.path),
    ).toEqual(['api.publicUrl']);
    expect(serviceConfigIssues({ LHN_PUBLIC_URL: 'https://bridge.example.org' })).toEqual([]);
  });
});

describe('alert webhook failure cause', () => {
  it('when fetch fails, then the cause code and message are given without the path', async () => {
    // A port nothing listens on (free a moment ago).
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    await new Promise((r) => server.close(r));
    const url = `http://127.0.0.1:${port}/services/T0/B0/very-secret-token`;
    const err = await fetch(url, { method: 'POST' }).catch((e: unknown) => e);
    const cause = failureCause(err, url);
    expect(cause.code).toBe('ECONNREFUSED');
    expect(cause.cause).toContain('ECONNREFUSED');
    expect(JSON.stringify(cause)).not.toContain('very-secret-token');
  });

  it('when an error message quotes the URL, then only its origin is kept', () => {
    const url = 'https://hooks.example.org/services/T0/B0/very-secret-token';
    const cause = failureCause(new TypeError(`Failed to parse URL from ${url}`), url);
    expect(cause.cause).toBe('Failed to parse URL from https://hooks.example.org');
  });
});
