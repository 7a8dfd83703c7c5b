// End to end in headless Chromium: a data manager logs in, sees the centre, syncs it from the
// dashboard and watches the run finish against the sandbox EHR, then retries a submission
// that failed while the registry was down. Screenshots of each step go to test-artifacts/.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser, screenshot } from './browser.js';
import { startSandboxWorld, type SandboxWorld } from '../api/sandbox-world.js';
import { waitFor } from '../sync/helpers.js';

describe('dashboard in a real browser', () => {
  let world: SandboxWorld;
  let browser: Browser;
  let page: Page;
  const shots: string[] = [];

  beforeAll(async () => {
    world = await startSandboxWorld({ patients: 10 });
    browser = await launchBrowser();
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  });
  afterAll(async () => {
    await browser?.close();
    await world?.close();
  });

  const centreRow = () => page.locator(`tr[data-centre-id="${world.centre.id}"]`);

  it('when a wrong key is entered, then login is refused; with an operator key the centre table shows the unsynced centre', async () => {
    await page.goto(world.url);
    await page.getByLabel('API key').fill('not-a-key');
    await page.getByRole('button', { name: 'Log in' }).click();
    await expect.poll(() => page.locator('#login-error').textContent()).toContain('not accepted');
    shots.push(await screenshot(page, '01-login-refused'));

    await page.getByLabel('API key').fill(world.keys.operator);
    await page.getByRole('button', { name: 'Log in' }).click();
    await centreRow().waitFor();
    expect(await page.locator('#session-who').textContent()).toBe('data-manager (operator)');
    expect(await centreRow().textContent()).toContain('Not synced yet');
    expect(await centreRow().textContent()).toContain('Sandbox Children’s Hospital');
    // The key stays in this tab's sessionStorage only.
    expect(await page.evaluate("sessionStorage.getItem('lhn-bridge.apiKey')")).toBe(
      world.keys.operator,
    );
    expect(await page.evaluate('localStorage.length')).toBe(0);
    shots.push(await screenshot(page, '02-centres-before-sync'));
  });

  it('when Sync now is clicked, then the run view follows the run until it succeeds, and the centre shows its last success', async () => {
    await page.getByRole('button', { name: `Sync ${world.centre.name} now` }).click();
    await page.waitForURL(/#\/run\//);
    await page
      .locator('.run-status', { hasText: 'Succeeded' })
      .first()
      .waitFor({ timeout: 90_000 });
    // The page shows the run's real counts: every visit of the generated centre.
    const runId = decodeURIComponent(page.url().split('#/run/')[1]!);
    const run = await world.api.runtime.runStore.get(runId);
    const visits = world.generated.truth.filter((v) => !v.retracted).length;
    expect(visits).toBeGreaterThan(0);
    expect(run!.counts.pulled).toBeGreaterThan(visits);
    expect(run!.counts.enqueued).toBeGreaterThanOrEqual(visits);
    const visitsRow = page.locator('tr', { has: page.getByRole('cell', { name: 'visits' }) });
    expect(await visitsRow.locator('td.num').textContent()).toBe(String(run!.counts.visits));
    shots.push(await screenshot(page, '03-run-succeeded'));

    await page.getByRole('link', { name: 'lhn-bridge' }).click();
    await centreRow().waitFor();
    await expect.poll(async () => centreRow().textContent(), { timeout: 10_000 }).toContain('OK');
    const row = (await centreRow().textContent()) ?? '';
    expect(row).toContain('Succeeded');
    expect(row).toContain(`${run!.counts.pulled} pulled`);
    await waitFor(
      () => world.registry.submissions().length === run!.counts.enqueued,
      30_000,
      'every submission delivered',
    );
    shots.push(await screenshot(page, '04-centres-after-sync'));

    await page.getByRole('link', { name: world.centre.name }).click();
    await page.getByRole('heading', { name: 'Data quality' }).waitFor();
    expect(await page.locator('#app-view').textContent()).toContain('Visits without a PGA');
    shots.push(await screenshot(page, '05-centre-detail'));
  });

  it('when a submission failed while the registry was down, then Retry in the dashboard delivers it', async () => {
    // A new version of one visit (its encounter changes), delivered while the registry is down.
    const visit = world.generated.truth.find((v) => !v.retracted)!;
    const encounter = world.ehr.get('Encounter', visit.encounterId)!;
    world.ehr.upsert(encounter as never);
    world.registry.faults.unavailableForMs(10 * 60_000);
    const accepted = world.registry.submissions().length;

    await page.goto(`${world.url}/#/centre/${world.centre.id}`);
    await page.getByLabel('Sync mode').selectOption('incremental');
    await page.getByRole('button', { name: 'Sync now' }).click();
    await page.waitForURL(/#\/run\//);
    await page
      .locator('.run-status', { hasText: 'Succeeded' })
      .first()
      .waitFor({ timeout: 90_000 });

    await page.getByRole('link', { name: 'lhn-bridge' }).click();
    const failedRow = page.locator('tr[data-job-id]');
    await failedRow.first().waitFor({ timeout: 30_000 });
    expect(await failedRow.count()).toBe(1);
    expect(await failedRow.first().textContent()).toMatch(/503|unavailable/i);
    shots.push(await screenshot(page, '06-failed-submission'));

    world.registry.faults.clear();
    await failedRow
      .first()
      .getByRole('button', { name: /^Retry/ })
      .click();
    await expect.poll(() => page.locator('#notice').textContent()).toContain('sent back');
    await waitFor(
      () => world.registry.submissions().length === accepted + 1,
      30_000,
      'the retried submission to reach the registry',
    );
    await expect.poll(() => failedRow.count(), { timeout: 15_000 }).toBe(0);
    expect(await page.getByRole('heading', { name: /Failed submissions/ }).textContent()).toBe(
      'Failed submissions (0)',
    );
    shots.push(await screenshot(page, '07-after-retry'));
    expect(shots).toHaveLength(7);
  });

  it('when a run has warnings, then its run view lists them by step, as text', async () => {
    const store = world.api.runtime.runStore;
    const run = await store.start({ centreId: world.centre.id, mode: 'full', reason: 'manual' });
    await store.addWarnings(run.runId, [
      { step: 'pull', message: "sync interrupted: the centre lock's lease lapsed" },
      { step: 'search', message: 'the EHR withheld data <img src=x onerror="window.pwned=1">' },
    ]);
    await store.finish(run.runId, { status: 'succeeded' });

    await page.goto(`${world.url}/#/run/${run.runId}`);
    await page.getByRole('heading', { name: 'Warnings' }).waitFor();
    const items = page.locator('ul.warnings li');
    expect(await items.allTextContents()).toEqual([
      "pull: sync interrupted: the centre lock's lease lapsed",
      'search: the EHR withheld data <img src=x onerror="window.pwned=1">',
    ]);
    // Text only: the message's markup is not parsed.
    expect(await page.locator('ul.warnings img').count()).toBe(0);
    expect(await page.evaluate('window.pwned')).toBeUndefined();
    await screenshot(page, '08-run-warnings');
  });
});
