// The data managers' dashboard: a small ES module over the admin JSON API, with no build step
// and no third-party code. Every value from the API reaches the page through textContent or
// attributes set one by one (never parsed as markup), so data cannot inject HTML. The API key is
// kept in sessionStorage (this tab only) and sent as a bearer token to this origin only.

const KEY_STORAGE = 'lhn-bridge.apiKey';
const REFRESH_MS = 4000;
const NOTICE_MS = 15_000;
const ROLE_RANK = { viewer: 0, operator: 1, admin: 2 };

const state = {
  key: sessionStorage.getItem(KEY_STORAGE),
  caller: null,
  timer: undefined,
  rendering: false,
  pending: undefined,
  noticeTimer: undefined,
  /** Onboarding check results by centre id (kept across refreshes). */
  checks: new Map(),
  /** Offset of the failed-submissions page shown, by view ('overview', 'centre:<id>'). */
  failedOffsets: new Map(),
};

/** Failed submissions shown per page. */
const FAILED_PAGE = 200;

/** One page of failed submissions for a view (query: '' or 'centre=<id>&'). */
async function loadFailed(view, query, again = true) {
  const offset = state.failedOffsets.get(view) ?? 0;
  const failed = await api(`/api/submissions/failed?${query}offset=${offset}&limit=${FAILED_PAGE}`);
  if (failed.items.length > 0 || offset === 0 || !again) return { ...failed, view, offset };
  // The page emptied (retried or resolved meanwhile): show the last page there is.
  const last = Math.max(Math.ceil(failed.total / FAILED_PAGE) - 1, 0) * FAILED_PAGE;
  state.failedOffsets.set(view, last);
  return loadFailed(view, query, false);
}

function showFailedPage(view, offset) {
  state.failedOffsets.set(view, Math.max(offset, 0));
  void render();
}

/** An error answer from the API, with its problem details. */
class ApiError extends Error {
  constructor(status, message, problem) {
    super(message);
    this.status = status;
    this.problem = problem;
  }
}

// ---------------------------------------------------------------------------------------------
// DOM helpers: elements are built from props and children; strings become text nodes.

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function')
      el.addEventListener(name.slice(2).toLowerCase(), value);
    else if (value === true) el.setAttribute(name, '');
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function $(id) {
  return document.getElementById(id);
}

/** Shows a message; success messages fade after a while, errors stay until the next one. */
function showNotice(message, kind = 'info', extra) {
  const notice = $('notice');
  notice.className = `notice notice-${kind}`;
  notice.replaceChildren(h('span', {}, message), extra ?? '');
  clearTimeout(state.noticeTimer);
  if (kind === 'success') state.noticeTimer = setTimeout(clearNotice, NOTICE_MS);
}

function clearNotice() {
  $('notice').className = 'notice';
  $('notice').replaceChildren();
}

function can(role) {
  return state.caller !== null && ROLE_RANK[state.caller.role] >= ROLE_RANK[role];
}

// ---------------------------------------------------------------------------------------------
// Formatting

function formatAgo(ms) {
  const abs = Math.abs(ms);
  const future = ms < 0;
  const units = [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['min', 60_000],
    ['s', 1000],
  ];
  for (const [unit, size] of units) {
    if (abs >= size || unit === 's') {
      const n = Math.floor(abs / size);
      return future ? `in ${n} ${unit}` : `${n} ${unit} ago`;
    }
  }
  return '';
}

function time(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  return h(
    'time',
    { datetime: iso, title: date.toLocaleString() },
    `${date.toLocaleString()} (${formatAgo(Date.now() - date.getTime())})`,
  );
}

const HEALTH_LABEL = { ok: 'OK', warning: 'Warning', alert: 'Alert', never: 'Not synced yet' };

function healthBadge(centre) {
  return h(
    'span',
    { class: `health health-${centre.health}` },
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    HEALTH_LABEL[centre.health] ?? centre.health,
    centre.syncing ? h('span', { class: 'syncing' }, ' · syncing') : '',
  );
}

const RUN_LABEL = {
  queued: 'Queued',
  running: 'Running',
  succeeded: 'Succeeded',
  failed: 'Failed',
};

function runStatus(status) {
  return h('span', { class: `run-status run-${status}` }, RUN_LABEL[status] ?? status);
}

function countsText(counts) {
  if (!counts) return '—';
  return `${counts.pulled} pulled · ${counts.visits} visits · ${counts.enqueued} new · ${counts.unchanged} unchanged · ${counts.retracted} retracted`;
}

function shortId(id) {
  return id.length > 16 ? `${id.slice(0, 12)}…` : id;
}

/**
 * A data table. `options.hiddenCaption` keeps the caption for screen readers only (when a
 * heading above says the same); `options.narrow` sizes the table to its content.
 */
function table(caption, headers, rows, empty, options = {}) {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h(
    'table',
    { class: options.narrow ? 'narrow' : undefined },
    h('caption', { class: options.hiddenCaption ? 'visually-hidden' : undefined }, caption),
    h(
      'thead',
      {},
      h(
        'tr',
        {},
        headers.map((t) => h('th', { scope: 'col' }, t)),
      ),
    ),
    h('tbody', {}, rows),
  );
}

// ---------------------------------------------------------------------------------------------
// API

async function api(path, options = {}) {
  const headers = { Accept: 'application/json', Authorization: `Bearer ${state.key}` };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method: options.method ?? 'GET',
    headers,
    body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
    cache: 'no-store',
    credentials: 'omit',
  });
  const type = response.headers.get('content-type') ?? '';
  const data = type.includes('json') ? await response.json() : null;
  if (response.status === 401 && !options.login) {
    logout('Your API key was not accepted any more. Please log in again.');
  }
  if (!response.ok) {
    const detail = data?.detail ?? data?.title ?? response.statusText;
    const issues = Array.isArray(data?.issues)
      ? ` (${data.issues.map((i) => `${i.path}: ${i.message}`).join('; ')})`
      : '';
    throw new ApiError(response.status, `${detail}${issues}`, data);
  }
  return data;
}

function reportError(err) {
  showNotice(err instanceof ApiError ? err.message : `Request failed: ${err.message}`, 'error');
}

// ---------------------------------------------------------------------------------------------
// Session

async function login(key) {
  state.key = key;
  try {
    state.caller = await api('/api/me', { login: true });
  } catch (err) {
    state.key = null;
    state.caller = null;
    throw err;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
}

function logout(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
  state.caller = null;
  showLogin(message);
}

function showLogin(message) {
  stopRefresh();
  $('app-view').hidden = true;
  $('app-view').replaceChildren();
  $('session').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message ?? '';
  $('api-key').value = '';
  $('api-key').focus();
}

function showApp() {
  $('login-view').hidden = true;
  $('session').hidden = false;
  $('session-who').textContent = `${state.caller.name} (${state.caller.role})`;
  $('app-view').hidden = false;
  void render({ focus: true });
  startRefresh();
}

// ---------------------------------------------------------------------------------------------
// Actions

async function syncNow(centreId, mode) {
  try {
    const result = await api(`/api/centres/${encodeURIComponent(centreId)}/sync`, {
      method: 'POST',
      body: mode ? { mode } : {},
    });
    showNotice(`Sync of ${centreId} queued (run ${result.runId}).`, 'success');
    location.hash = `#/run/${encodeURIComponent(result.runId)}`;
  } catch (err) {
    if (err instanceof ApiError && err.status === 409 && err.problem?.runId) {
      showNotice(
        `A sync of ${centreId} is already queued or running. `,
        'info',
        h('a', { href: `#/run/${encodeURIComponent(err.problem.runId)}` }, 'Follow that run'),
      );
    } else reportError(err);
  }
}

async function retrySubmission(id) {
  try {
    await api(`/api/submissions/failed/${encodeURIComponent(id)}/retry`, { method: 'POST' });
    showNotice(`Submission ${shortId(id)} sent back to the queue.`, 'success');
  } catch (err) {
    reportError(err);
  }
  await render();
}

async function retryAll(centreId) {
  try {
    const result = await api('/api/submissions/failed/retry-all', {
      method: 'POST',
      body: centreId ? { centre: centreId } : {},
    });
    showNotice(`${result.retried} failed submission(s) being sent back to the queue.`, 'success');
  } catch (err) {
    reportError(err);
  }
  await render();
}

async function resolveSubmission(id, note) {
  try {
    await api(`/api/submissions/failed/${encodeURIComponent(id)}/resolve`, {
      method: 'POST',
      body: { note },
    });
    showNotice(`Submission ${shortId(id)} marked resolved.`, 'success');
  } catch (err) {
    reportError(err);
  }
  await render();
}

async function runCheck(centreId) {
  state.checks.set(centreId, { status: 'running' });
  await render();
  try {
    const report = await api(`/api/centres/${encodeURIComponent(centreId)}/check`, {
      method: 'POST',
    });
    state.checks.set(centreId, { status: 'done', report });
  } catch (err) {
    state.checks.set(centreId, { status: 'error', message: err.message });
  }
  await render();
}

// ---------------------------------------------------------------------------------------------
// Views

function syncButton(centre) {
  if (!can('operator')) return '';
  return h(
    'button',
    {
      type: 'button',
      class: 'primary',
      'aria-label': `Sync ${centre.name} now`,
      disabled: centre.syncing,
      onclick: () => syncNow(centre.id),
    },
    'Sync now',
  );
}

function renderAlerts(alerts) {
  if (alerts.length === 0) return '';
  return h(
    'section',
    { class: 'alerts', 'aria-labelledby': 'alerts-title' },
    h('h3', { id: 'alerts-title' }, `Alerts (${alerts.length})`),
    h(
      'ul',
      {},
      alerts.map((a) =>
        h(
          'li',
          { class: 'alert-item' },
          h('a', { href: `#/centre/${encodeURIComponent(a.centreId)}` }, a.centreId),
          ` — ${a.kind === 'stale' ? 'not syncing' : 'failing'}: ${a.message} · raised `,
          time(a.raisedAt),
        ),
      ),
    ),
  );
}

function renderCentresTable(centres) {
  const rows = centres.map((c) =>
    h(
      'tr',
      { dataset: { centreId: c.id } },
      h(
        'th',
        { scope: 'row' },
        h('a', { href: `#/centre/${encodeURIComponent(c.id)}` }, c.name),
        h('div', { class: 'muted small' }, c.id),
      ),
      h('td', {}, healthBadge(c)),
      h('td', {}, time(c.lastSuccess?.endedAt)),
      h(
        'td',
        {},
        c.lastRun
          ? [
              runStatus(c.lastRun.status),
              ' ',
              h('a', { href: `#/run/${encodeURIComponent(c.lastRun.runId)}` }, 'details'),
              c.lastRun.lastError
                ? h(
                    'div',
                    { class: 'small reason' },
                    `${c.lastRun.lastError.step}: ${c.lastRun.lastError.message}`,
                  )
                : '',
            ]
          : '—',
      ),
      h('td', {}, c.nextRunAt ? time(c.nextRunAt) : h('span', { class: 'muted' }, 'manual only')),
      h('td', { class: 'small' }, countsText(c.lastRun?.counts)),
      h(
        'td',
        {},
        c.failedRunsInARow > 0 ? `${c.failedRunsInARow} failed run(s)` : '',
        c.failedRunsInARow > 0 && c.failedSubmissions > 0 ? h('br') : '',
        c.failedSubmissions > 0 ? `${c.failedSubmissions} failed submission(s)` : '',
        c.failedRunsInARow === 0 && c.failedSubmissions === 0
          ? h('span', { class: 'muted' }, 'none')
          : '',
      ),
      h(
        'td',
        {},
        h('a', { href: `#/centre/${encodeURIComponent(c.id)}` }, `${c.qualityFindings} finding(s)`),
        c.unmappedCodes > 0
          ? h('div', { class: 'small' }, `${c.unmappedCodes} unmapped code(s)`)
          : '',
      ),
      h(
        'td',
        {},
        c.alerts.length > 0
          ? c.alerts.map((a) =>
              h(
                'span',
                { class: 'badge badge-alert', title: a.message },
                a.kind === 'stale' ? 'stale' : 'failing',
              ),
            )
          : h('span', { class: 'muted' }, 'none'),
      ),
      h('td', {}, syncButton(c)),
    ),
  );
  return table(
    'Centres',
    [
      'Centre',
      'Status',
      'Last success',
      'Last run',
      'Next run',
      'Last run counts',
      'Failures',
      'Data quality',
      'Alerts',
      '',
    ],
    rows,
    'No centres are configured. Add centre files to the centres folder and restart.',
    { hiddenCaption: true },
  );
}

function renderFailed(failed, centreId) {
  const rows = failed.items.map((item) => {
    const actions = h('td', { class: 'actions' });
    const row = h(
      'tr',
      { dataset: { jobId: item.jobId } },
      h('td', {}, h('code', { title: item.jobId }, shortId(item.submissionId))),
      centreId ? '' : h('td', {}, item.centreId),
      h('td', {}, item.kind),
      h(
        'td',
        { class: 'reason' },
        item.failedReason || 'no reason recorded',
        item.permanent ? h('div', { class: 'small muted' }, 'rejected by the registry') : '',
      ),
      h('td', {}, String(item.attemptsMade)),
      h('td', {}, time(item.failedAt)),
      actions,
    );
    if (can('operator')) {
      const noteInput = h('input', {
        type: 'text',
        name: 'note',
        required: true,
        placeholder: 'why it is resolved',
        'aria-label': `Resolution note for ${item.submissionId}`,
      });
      const form = h(
        'form',
        {
          class: 'resolve-form',
          hidden: true,
          onsubmit: (event) => {
            event.preventDefault();
            void resolveSubmission(item.jobId, noteInput.value);
          },
        },
        noteInput,
        h('button', { type: 'submit' }, 'Confirm'),
        h('button', { type: 'button', onclick: () => (form.hidden = true) }, 'Cancel'),
      );
      actions.append(
        h(
          'button',
          {
            type: 'button',
            'aria-label': `Retry ${item.submissionId}`,
            onclick: () => retrySubmission(item.jobId),
          },
          'Retry',
        ),
        h(
          'button',
          {
            type: 'button',
            'aria-label': `Resolve ${item.submissionId}`,
            onclick: () => {
              form.hidden = false;
              noteInput.focus();
            },
          },
          'Resolve…',
        ),
        form,
      );
    }
    return row;
  });
  const headers = [
    'Submission',
    ...(centreId ? [] : ['Centre']),
    'Kind',
    'Reason',
    'Attempts',
    'Failed',
    '',
  ];
  return h(
    'section',
    { 'aria-labelledby': 'failed-title' },
    h(
      'div',
      { class: 'section-head' },
      h('h3', { id: 'failed-title' }, `Failed submissions (${failed.total})`),
      can('operator') && failed.total > 0
        ? h('button', { type: 'button', onclick: () => retryAll(centreId) }, 'Retry all')
        : '',
    ),
    table('Failed submissions', headers, rows, 'No failed submissions.', { hiddenCaption: true }),
    failed.total > failed.items.length
      ? h(
          'p',
          { class: 'muted pager' },
          `Showing ${failed.offset + 1}–${failed.offset + failed.items.length} of ${failed.total}. `,
          failed.offset > 0
            ? h(
                'button',
                {
                  type: 'button',
                  onclick: () => showFailedPage(failed.view, failed.offset - FAILED_PAGE),
                },
                'Previous',
              )
            : '',
          failed.offset + failed.items.length < failed.total
            ? h(
                'button',
                {
                  type: 'button',
                  onclick: () => showFailedPage(failed.view, failed.offset + FAILED_PAGE),
                },
                'Next',
              )
            : '',
        )
      : '',
  );
}

function renderResolved(items) {
  if (items.length === 0) return '';
  return h(
    'details',
    { class: 'resolved' },
    h('summary', {}, `Resolved submissions (${items.length} most recent)`),
    table(
      'Resolved submissions',
      ['Submission', 'Centre', 'Reason', 'Resolved by', 'When', 'Note'],
      items.map((r) =>
        h(
          'tr',
          {},
          h('td', {}, h('code', { title: r.jobId }, shortId(r.submissionId))),
          h('td', {}, r.centreId),
          h('td', { class: 'reason' }, r.failedReason),
          h('td', {}, r.resolvedBy),
          h('td', {}, time(r.resolvedAt)),
          h('td', {}, r.note ?? ''),
        ),
      ),
      '',
    ),
  );
}

async function renderOverview() {
  const [{ centres }, { alerts }, failed, resolved] = await Promise.all([
    api('/api/centres'),
    api('/api/alerts'),
    loadFailed('overview', ''),
    api('/api/submissions/resolved?limit=50'),
  ]);
  return [
    h('h2', { tabindex: '-1' }, 'Centres'),
    renderAlerts(alerts),
    renderCentresTable(centres),
    renderFailed(failed),
    renderResolved(resolved.items),
  ];
}

function renderQuality(report) {
  if (!report)
    return h(
      'p',
      { class: 'empty' },
      'No quality report yet: the first successful sync creates it.',
    );
  const kinds = Object.entries(report.findingsByKind).sort((a, b) => b[1] - a[1]);
  return [
    h(
      'p',
      {},
      `Covers ${report.visits} visit(s); refreshed `,
      time(report.generatedAt),
      ` by run `,
      h('a', { href: `#/run/${report.runId}` }, report.runId),
      '.',
    ),
    table(
      'Unmapped local codes (add them to the centre’s value sets)',
      ['Field', 'Code', 'Count', 'Example resource'],
      report.unmappedCodes.map((u) =>
        h(
          'tr',
          {},
          h('td', {}, u.field),
          h('td', {}, h('code', {}, u.code)),
          h('td', {}, String(u.count)),
          h('td', {}, u.exampleResource ?? '—'),
        ),
      ),
      'No unmapped codes.',
    ),
    h(
      'p',
      {},
      `Visits without a PGA: ${report.visitsWithoutPga.count}`,
      report.visitsWithoutPga.exampleResources.length > 0
        ? ` (e.g. ${report.visitsWithoutPga.exampleResources.join(', ')})`
        : '',
    ),
    table(
      'Implausible values (set to null)',
      ['Field', 'Count', 'Example resource'],
      report.implausibleValues.map((v) =>
        h(
          'tr',
          {},
          h('td', {}, v.field),
          h('td', {}, String(v.count)),
          h('td', {}, v.exampleResource ?? '—'),
        ),
      ),
      'No implausible values.',
    ),
    table(
      'All findings by kind',
      ['Kind', 'Count'],
      kinds.map(([kind, n]) =>
        h('tr', {}, h('td', {}, kind), h('td', { class: 'num' }, String(n))),
      ),
      'No findings.',
      { narrow: true },
    ),
  ];
}

const STEP_LABEL = { ok: 'ok', failed: 'failed', skipped: 'skipped' };

function renderCheckReport(report) {
  const steps = Array.isArray(report.steps) ? report.steps : [];
  return h(
    'div',
    { class: 'check-report' },
    h(
      'p',
      { class: report.ok ? 'step-ok' : 'step-failed' },
      report.ok
        ? 'Onboarding check passed.'
        : 'Onboarding check failed: fix the failed steps below and run it again.',
      ' ',
      time(report.finishedAt),
    ),
    h(
      'ol',
      {},
      steps.map((step) =>
        h(
          'li',
          { class: `step-${step.status}` },
          h('strong', {}, `${step.title}: ${STEP_LABEL[step.status] ?? step.status}`),
          step.reason ? ` — ${step.reason}` : '',
          step.hint ? h('div', { class: 'hint' }, `What to do: ${step.hint}`) : '',
          Array.isArray(step.details) && step.details.length > 0
            ? h(
                'ul',
                { class: 'small' },
                step.details.map((d) => h('li', {}, d)),
              )
            : '',
        ),
      ),
    ),
  );
}

function renderCheckState(centreId) {
  const check = state.checks.get(centreId);
  if (!check) return '';
  if (check.status === 'running') return h('p', {}, 'Running the onboarding check…');
  if (check.status === 'error') return h('p', { class: 'error' }, check.message);
  return renderCheckReport(check.report);
}

async function renderCentre(id) {
  const path = `/api/centres/${encodeURIComponent(id)}`;
  const [centre, quality, failed] = await Promise.all([
    api(path),
    api(`${path}/quality`).catch((err) => {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }),
    loadFailed(`centre:${id}`, `centre=${encodeURIComponent(id)}&`),
  ]);
  const modeSelect = h(
    'select',
    { 'aria-label': 'Sync mode' },
    h(
      'option',
      { value: 'incremental', selected: centre.schedule.mode === 'incremental' },
      'incremental',
    ),
    h('option', { value: 'full', selected: centre.schedule.mode === 'full' }, 'full'),
  );
  const runs = centre.recentRuns.map((r) =>
    h(
      'tr',
      {},
      h('td', {}, h('a', { href: `#/run/${encodeURIComponent(r.runId)}` }, time(r.startedAt))),
      h('td', {}, runStatus(r.status)),
      h('td', {}, `${r.mode} (${r.reason})`),
      h('td', { class: 'small' }, countsText(r.counts)),
      h(
        'td',
        { class: 'reason' },
        r.lastError ? `${r.lastError.step}: ${r.lastError.message}` : '',
      ),
    ),
  );
  return [
    h('p', {}, h('a', { href: '#/' }, '← All centres')),
    h('h2', { tabindex: '-1' }, centre.name, ' ', healthBadge(centre)),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Centre id'),
      h('dd', {}, centre.id),
      h('dt', {}, 'Time zone'),
      h('dd', {}, centre.timeZone),
      h('dt', {}, 'Schedule'),
      h(
        'dd',
        {},
        centre.schedule.cron ? `${centre.schedule.cron} (${centre.schedule.mode})` : 'manual only',
      ),
      h('dt', {}, 'Next run'),
      h('dd', {}, time(centre.nextRunAt)),
      h('dt', {}, 'Last success'),
      h('dd', {}, time(centre.lastSuccess?.endedAt)),
      h('dt', {}, 'Failed runs in a row'),
      h('dd', {}, String(centre.failedRunsInARow)),
    ),
    renderAlerts(centre.alerts),
    h(
      'div',
      { class: 'toolbar' },
      can('operator')
        ? [
            modeSelect,
            h(
              'button',
              {
                type: 'button',
                class: 'primary',
                disabled: centre.syncing,
                onclick: () => syncNow(centre.id, modeSelect.value),
              },
              centre.syncing ? 'Syncing…' : 'Sync now',
            ),
          ]
        : '',
      can('admin')
        ? h(
            'button',
            { type: 'button', onclick: () => runCheck(centre.id) },
            'Run onboarding check',
          )
        : '',
    ),
    h('div', { class: 'check-target', 'aria-live': 'polite' }, renderCheckState(centre.id)),
    h('h3', {}, 'Recent runs'),
    table(
      'Recent runs',
      ['Started', 'Status', 'Mode', 'Counts', 'Last error'],
      runs,
      'No runs yet.',
      { hiddenCaption: true },
    ),
    h('h3', {}, 'Data quality'),
    renderQuality(quality),
    renderFailed(failed, centre.id),
  ];
}

async function renderRun(id) {
  const run = await api(`/api/runs/${encodeURIComponent(id)}`);
  const counts = Object.entries(run.counts);
  const findings = Object.entries(run.findingsByKind).sort((a, b) => b[1] - a[1]);
  const progress =
    run.progress && typeof run.progress === 'object' ? Object.entries(run.progress) : [];
  return [
    h(
      'p',
      {},
      h('a', { href: `#/centre/${encodeURIComponent(run.centreId)}` }, `← ${run.centreId}`),
    ),
    h('h2', { tabindex: '-1' }, 'Run ', h('code', {}, run.runId), ' ', runStatus(run.status)),
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Centre'),
      h('dd', {}, run.centreId),
      h('dt', {}, 'Mode'),
      h('dd', {}, `${run.mode} (${run.reason})`),
      h('dt', {}, 'Started'),
      h('dd', {}, time(run.startedAt)),
      h('dt', {}, 'Ended'),
      h('dd', {}, time(run.endedAt)),
      h('dt', {}, 'Phase'),
      h('dd', {}, run.phase ?? '—'),
    ),
    progress.length > 0
      ? h(
          'p',
          { class: 'progress' },
          'Progress: ',
          progress
            .map(([k, v]) => `${k} ${typeof v === 'object' ? JSON.stringify(v) : v}`)
            .join(' · '),
        )
      : '',
    table(
      'Counts',
      ['Stage', 'Count'],
      counts.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, String(v)))),
      '',
      { narrow: true },
    ),
    table(
      'Quality findings in this run',
      ['Kind', 'Count'],
      findings.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', { class: 'num' }, String(v)))),
      'No quality findings in this run.',
      { narrow: true },
    ),
    run.errors.length > 0
      ? [
          h('h3', {}, 'Errors'),
          h(
            'ul',
            { class: 'errors' },
            run.errors.map((e) => h('li', {}, h('strong', {}, e.step), `: ${e.message}`)),
          ),
        ]
      : '',
    // What the run worked around without failing (a skipped type, clock skew, data the EHR
    // withheld, a lost lock): a data manager needs to see it, not only a raw API read.
    Array.isArray(run.warnings) && run.warnings.length > 0
      ? [
          h('h3', {}, 'Warnings'),
          h(
            'ul',
            { class: 'warnings' },
            run.warnings.map((w) => h('li', {}, h('strong', {}, w.step), `: ${w.message}`)),
          ),
        ]
      : '',
  ];
}

// ---------------------------------------------------------------------------------------------
// Routing and refresh

function route() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [view, ...rest] = hash.split('/');
  const id = decodeURIComponent(rest.join('/'));
  if (view === 'centre' && id) return { name: 'centre', id };
  if (view === 'run' && id) return { name: 'run', id };
  return { name: 'overview' };
}

/** Renders the current view; a call during a render queues one more render after it. */
async function render(options = {}) {
  if (!state.caller) return;
  if (state.rendering) {
    state.pending = { focus: Boolean(state.pending?.focus || options.focus) };
    return;
  }
  state.rendering = true;
  const current = route();
  try {
    const content =
      current.name === 'centre'
        ? await renderCentre(current.id)
        : current.name === 'run'
          ? await renderRun(current.id)
          : await renderOverview();
    // The route may have changed while data loaded; the queued render will draw the new one.
    if (!state.caller || route().name !== current.name || route().id !== current.id) return;
    const view = $('app-view');
    view.replaceChildren();
    append(view, [content]);
    view.dataset.view = current.name;
    if (options.focus) view.querySelector('h2')?.focus();
  } catch (err) {
    if (state.caller) reportError(err);
  } finally {
    state.rendering = false;
    if (route().name !== current.name || route().id !== current.id) {
      state.pending ??= { focus: true };
    }
    const next = state.pending;
    state.pending = undefined;
    if (next) void render(next);
  }
}

function isEditing() {
  const active = document.activeElement;
  if (!active || !$('app-view').contains(active)) return false;
  return active.tagName === 'INPUT' || active.tagName === 'SELECT' || active.tagName === 'TEXTAREA';
}

function startRefresh() {
  stopRefresh();
  state.timer = setInterval(() => {
    const openForm = $('app-view').querySelector('.resolve-form:not([hidden])');
    if (document.visibilityState === 'visible' && !isEditing() && !openForm) void render();
  }, REFRESH_MS);
}

function stopRefresh() {
  if (state.timer !== undefined) clearInterval(state.timer);
  state.timer = undefined;
}

// ---------------------------------------------------------------------------------------------
// Start

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const key = $('api-key').value.trim();
  $('login-error').textContent = '';
  try {
    await login(key);
    clearNotice();
    showApp();
  } catch (err) {
    $('login-error').textContent =
      err instanceof ApiError && err.status === 401
        ? 'That API key was not accepted.'
        : err instanceof ApiError && err.status === 429
          ? 'Too many failed attempts from this address; wait a minute and try again.'
          : `Could not log in: ${err.message}`;
  }
});

$('logout').addEventListener('click', () => {
  clearNotice();
  logout();
});

window.addEventListener('hashchange', () => {
  void render({ focus: true });
});

if (state.key) {
  login(state.key).then(showApp, () => logout('Please log in again.'));
} else {
  showLogin();
}
