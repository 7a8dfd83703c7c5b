// Bull Board in headless Chromium under its Content-Security-Policy (security review finding
// 9): the UI still loads and lists the queues, with no script or style blocked by the CSP;
// its responses are never cached and carry no X-Powered-By.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { launchBrowser, screenshot } from './browser.js';
import { startTestApi, type TestApi } from '../api/helpers.js';

describe('Bull Board in a real browser', () => {
  let api: TestApi;
  let browser: Browser;

  beforeAll(async () => {
    api = await startTestApi();
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await api?.close();
  });

  it('when an operator opens /admin/queues with Basic credentials, then the UI lists both queues and the CSP blocks nothing it needs', async () => {
    const context = await browser.newContext({
      httpCredentials: { username: 'operator', password: api.keys.operator },
      viewport: { width: 1300, height: 800 },
    });
    const page = await context.newPage();
    const violations: string[] = [];
    page.on('console', (msg) => {
      const text = msg.text();
      // Google Fonts is blocked on purpose (no third-party requests); anything else counts.
      if (/Content Security Policy/i.test(text) && !/fonts\.googleapis/.test(text))
        violations.push(text);
    });
    const response = await page.goto(`${api.url}/admin/queues`);
    expect(response?.status()).toBe(200);
    const headers = response!.headers();
    expect(headers['cache-control']).toBe('no-store');
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['x-powered-by']).toBeUndefined();
    await page.getByText('submissions').first().waitFor({ timeout: 20_000 });
    await expect.poll(() => page.getByText('sync').count()).toBeGreaterThan(0);
    // A queue's page loads its jobs through Bull Board's API (connect-src 'self').
    await page.getByText('submissions').first().click();
    await page
      .getByText(/Completed/i)
      .first()
      .waitFor({ timeout: 20_000 });
    await page.waitForLoadState('networkidle');
    await screenshot(page, 'bull-board');
    expect(violations).toEqual([]);
    await context.close();
  });

  it('when Bull Board answers its API or static files, then none is cached and none says X-Powered-By', async () => {
    const auth = { authorization: `Bearer ${api.keys.operator}` };
    for (const path of [
      '/admin/queues',
      '/admin/queues/api/queues',
      '/admin/queues/static/favicon-32x32.png',
    ]) {
      const res = await fetch(`${api.url}${path}`, { headers: auth });
      expect(res.headers.get('cache-control'), path).toBe('no-store');
      expect(res.headers.get('x-powered-by'), path).toBeNull();
      expect(res.headers.get('content-security-policy'), path).toContain("default-src 'self'");
    }
    for (const path of ['/health', '/api/me', '/', '/nope']) {
      const res = await fetch(`${api.url}${path}`, { headers: auth });
      expect(res.headers.get('x-powered-by'), path).toBeNull();
    }
  });
});
