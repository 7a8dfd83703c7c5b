// Registry credentials belong in registry.auth, in a form that can go in an HTTP header: a URL
// with user:password, or a bearer token with a line break, would make every delivery fail with
// fetch's error, which quotes the URL or header (the secret) into the failed reason viewers read.
import { describe, expect, it } from 'vitest';
import { serviceConfigIssues } from './service-issues.js';

describe('registry credentials in the service config', () => {
  it.each([
    'https://reguser:REGPASS@registry.example.org/',
    'http://reguser:REGPASS@127.0.0.1:8443/',
    'https://REGPASS@registry.example.org/',
  ])('when registry.url carries user info (%s), then it is refused without echoing it', (url) => {
    const issues = serviceConfigIssues({ LHN_REGISTRY_URL: url });
    expect(issues.map((i) => i.path)).toEqual(['registry.url']);
    expect(issues[0]!.message).toMatch(/must not contain user:password/);
    expect(issues[0]!.message).toContain('(set by LHN_REGISTRY_URL)');
    expect(JSON.stringify(issues)).not.toContain('REGPASS');
  });

  it('when the token URL carries user info, then it is refused without echoing it', () => {
    const issues = serviceConfigIssues({
      LHN_REGISTRY_URL: 'https://registry.example.org/',
      LHN_REGISTRY_AUTH: JSON.stringify({
        type: 'client-credentials',
        tokenUrl: 'https://tokuser:TOKPASS@auth.example.org/token',
        clientId: 'bridge',
        clientSecret: 'cs',
      }),
    });
    expect(issues.map((i) => i.path)).toEqual(['registry.auth.tokenUrl']);
    expect(issues[0]!.message).toMatch(/must not contain user:password/);
    expect(JSON.stringify(issues)).not.toContain('TOKPASS');
  });

  it.each([
    ['a line break', 'AAAASECRETPART1\nBBBBSECRETPART2'],
    ['a carriage return', 'AAAASECRETPART1\rBBBB'],
    ['a space', 'AAAASECRETPART1 BBBB'],
    ['a NUL', 'AAAASECRETPART1\u0000BBBB'],
    ['a trailing newline', 'AAAASECRETPART1\n'],
  ])('when the bearer token has %s, then it is refused without echoing it', (_what, token) => {
    const issues = serviceConfigIssues({
      LHN_REGISTRY_URL: 'https://registry.example.org/',
      LHN_REGISTRY_AUTH: JSON.stringify({ type: 'bearer', token }),
    });
    expect(issues.map((i) => i.path)).toEqual(['registry.auth.token']);
    expect(issues[0]!.message).toMatch(/HTTP header/);
    expect(JSON.stringify(issues)).not.toContain('SECRETPART1');
  });

  it('when the registry URL, token URL and token are plain, then they are accepted', () => {
    expect(
      serviceConfigIssues({
        LHN_REGISTRY_URL: 'https://registry.example.org/',
        LHN_REGISTRY_AUTH: JSON.stringify({ type: 'bearer', token: 'abc.DEF-123_~+/=' }),
      }),
    ).toEqual([]);
    expect(
      serviceConfigIssues({
        LHN_REGISTRY_URL: 'http://127.0.0.1:8443/',
        LHN_REGISTRY_AUTH: JSON.stringify({
          type: 'client-credentials',
          tokenUrl: 'https://auth.example.org/token',
          clientId: 'bridge',
          clientSecret: 'cs with spaces is fine',
        }),
      }),
    ).toEqual([]);
  });
});
