import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DASHBOARD_CSP, DASHBOARD_DIR } from '../../src/api/app.js';
import { startTestApi, type TestApi } from './helpers.js';

describe('dashboard files', () => {
  let api: TestApi;

  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(async () => {
    await api.close();
  });

  it('when / is opened without a key, then the page is served with a strict CSP and no data', async () => {
    const res = await fetch(`${api.url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/html');
    expect(res.headers.get('content-security-policy')).toBe(DASHBOARD_CSP);
    expect(DASHBOARD_CSP).toContain("script-src 'self'");
    expect(DASHBOARD_CSP).not.toContain('unsafe-inline');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const html = await res.text();
    expect(html).toContain('<script type="module" src="app.js"></script>');
    expect(html).not.toContain('Test centre alpha');
  });

  it('when the script and stylesheet are fetched, then they come with JavaScript and CSS types', async () => {
    const js = await fetch(`${api.url}/app.js`);
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/javascript/);
    const css = await fetch(`${api.url}/style.css`);
    expect(css.headers.get('content-type')).toContain('text/css');
  });

  it('when /dashboard is opened, then it redirects to the page', async () => {
    const res = await fetch(`${api.url}/dashboard`, { redirect: 'manual' });
    expect(res.status).toBe(301);
    expect(res.headers.get('location')).toBe('/');
  });

  it('when the files are read, then they load nothing from other origins and never use innerHTML or inline code', async () => {
    const files = await readdir(DASHBOARD_DIR);
    expect(files.sort()).toEqual(['app.js', 'index.html', 'style.css']);
    for (const file of files) {
      const text = await readFile(join(DASHBOARD_DIR, file), 'utf8');
      expect(text, file).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
      expect(text, file).not.toMatch(/@import|url\(\s*["']?https?:/);
      expect(text, file).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
      expect(text, file).not.toMatch(/\son[a-z]+=["']/);
    }
  });
});
