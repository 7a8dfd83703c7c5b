// docs/production.md tells operators how to scrape /metrics: the endpoint needs an API key,
// and the header the docs give Prometheus is the one the API reads.
import { readFileSync } from 'node:fs';
import type { Request } from 'express';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { readPresentedKey } from '../../src/api/auth.js';

const doc = readFileSync(new URL('../../docs/production.md', import.meta.url), 'utf8');
const monitoring = doc.slice(doc.indexOf('## Monitoring'));

function request(headers: Record<string, string>): Request {
  return { get: (name: string) => headers[name.toLowerCase()] } as unknown as Request;
}

describe('docs/production.md, Monitoring', () => {
  it('when /metrics is to be scraped, then it says an API key (a viewer key will do) is needed', () => {
    expect(monitoring).toMatch(/`\/metrics`[^]*needs an API key/);
    expect(monitoring).toMatch(/`viewer`/);
    expect(monitoring).toMatch(/LHN_API_KEYS/);
  });

  it('when it shows the Prometheus scrape config, then that config sends the key the way the API reads it', () => {
    const block = /```yaml\n([^]*?)```/.exec(monitoring)?.[1];
    expect(block).toBeDefined();
    const job = (
      parse(block!) as {
        scrape_configs: {
          metrics_path: string;
          authorization: { type?: string; credentials?: string; credentials_file?: string };
        }[];
      }
    ).scrape_configs[0]!;
    expect(job.metrics_path).toBe('/metrics');
    // Prometheus sends `Authorization: <type> <credentials>`, type Bearer by default.
    const type = job.authorization.type ?? 'Bearer';
    expect(job.authorization.credentials ?? job.authorization.credentials_file).toBeDefined();
    expect(readPresentedKey(request({ authorization: `${type} the-key` }))).toBe('the-key');
    // Basic is not read on /metrics, so the docs must not suggest basic_auth.
    expect(readPresentedKey(request({ authorization: 'Basic dTp0aGUta2V5' }))).toBeUndefined();
    expect(monitoring).not.toMatch(/^\s*basic_auth:/m);
  });
});
