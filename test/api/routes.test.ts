import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  SUBMISSIONS_QUEUE,
  createSubmissionProcessor,
  type SubmissionJobData,
} from '../../queues/submissions.js';
import { createRegistryClient } from '../../src/registry/delivery.js';
import { createSubmissionEnqueuer } from '../../src/sync/enqueue.js';
import { openVisitState } from '../../src/sync/visit-state.js';
import { schedulerId, syncCentreSchedules } from '../../src/sync/schedules.js';
import { emptyCounts, type QualityReport } from '../../src/sync/run-store.js';
import { startSandboxRegistry, type SandboxRegistry } from '../../src/sandbox/registry/index.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { makeVisit, waitFor } from '../sync/helpers.js';
import { SECRET, call, makeCentre, startTestApi, testRedis, type TestApi } from './helpers.js';

describe('admin API routes over real Redis', () => {
  let api: TestApi;
  let registry: SandboxRegistry;
  let worker: Worker<SubmissionJobData>;
  let workerRedis: Redis;

  beforeAll(async () => {
    registry = await startSandboxRegistry();
    api = await startTestApi({
      centres: [
        makeCentre('alpha', {
          schedule: { cron: '0 2 * * *', mode: 'incremental' },
          alerts: { failuresInARow: 1 },
        }),
        makeCentre('beta'),
      ],
      config: { registry: { url: registry.url, timeoutMs: 2000 } },
    });
    const { runtime } = api.server;
    workerRedis = testRedis();
    const registryConfig = parseServiceConfig({
      pseudonymSecret: SECRET,
      registry: { url: registry.url, timeoutMs: 2000 },
    }).registry;
    worker = new Worker<SubmissionJobData>(
      SUBMISSIONS_QUEUE,
      createSubmissionProcessor({
        client: createRegistryClient({ config: registryConfig }),
        redis: workerRedis,
        prefix: api.prefix,
      }),
      { connection: workerRedis, prefix: api.prefix, concurrency: 2 },
    );
    // The centres' job schedulers, as a worker creates them at start.
    await syncCentreSchedules(runtime.queues.sync, runtime.centres.values());
    // History: a success, then a failure.
    const ok = await runtime.runStore.start({ centreId: 'alpha', mode: 'full', reason: 'manual' });
    await runtime.runStore.finish(ok.runId, {
      status: 'succeeded',
      counts: { ...emptyCounts(), pulled: 120, mapped: 120, visits: 14, enqueued: 14 },
      findingsByKind: { 'missing-pga': 3, 'unmapped-code': 2 },
    });
    await new Promise((r) => setTimeout(r, 5));
    const bad = await runtime.runStore.start({
      centreId: 'alpha',
      mode: 'incremental',
      reason: 'schedule',
    });
    await runtime.runStore.finish(bad.runId, {
      status: 'failed',
      errors: [{ step: 'token', message: 'invalid_client: the EHR does not know the key id' }],
    });
    const report: QualityReport = {
      centreId: 'alpha',
      runId: ok.runId,
      generatedAt: new Date().toISOString(),
      visits: 14,
      unmappedCodes: [
        {
          field: 'pga',
          code: 'http://centre.example/pga-answer|Z9',
          count: 2,
          exampleResource: 'Observation/obs-17',
        },
      ],
      visitsWithoutPga: { count: 3, exampleResources: ['Encounter/enc-4'] },
      implausibleValues: [{ field: 'height', count: 1, exampleResource: 'Observation/obs-3' }],
      findingsByKind: { 'missing-pga': 3, 'unmapped-code': 2, 'implausible-value': 1 },
    };
    await runtime.runStore.saveQualityReport(report);
  });

  afterAll(async () => {
    await worker.close();
    await api.close();
    await workerRedis.quit();
    await registry.close();
  });

  async function enqueueVisits(centreId: string, encounterIds: string[]) {
    const { runtime } = api.server;
    const enqueuer = createSubmissionEnqueuer({
      queue: runtime.queues.submissions,
      redis: runtime.redis,
      state: openVisitState(runtime.redis, api.prefix, centreId),
      centreId,
      pseudonymSecret: SECRET,
      runId: 'run-api-test',
    });
    const visits = encounterIds.map((encounterId) =>
      makeVisit({ centreId, patientId: 'p1', encounterId }),
    );
    for (const v of visits) await enqueuer.add(v);
    await enqueuer.flush();
    return visits;
  }

  async function stateOf(jobId: string) {
    return (await api.server.runtime.queues.submissions.getJob(jobId))?.getState();
  }

  it('when the centres are listed, then each has its last run, last success, next scheduled run, counts, failures and findings', async () => {
    const res = await call(`${api.url}/api/centres`, { key: api.keys.viewer });
    expect(res.status).toBe(200);
    const [alpha, beta] = res.body.centres;
    expect(alpha).toMatchObject({
      id: 'alpha',
      name: 'Test centre alpha',
      schedule: { cron: '0 2 * * *', mode: 'incremental' },
      health: 'warning',
      syncing: false,
      lastRun: {
        status: 'failed',
        lastError: { step: 'token', message: 'invalid_client: the EHR does not know the key id' },
      },
      lastSuccess: { status: 'succeeded', counts: { pulled: 120, visits: 14, enqueued: 14 } },
      failedRunsInARow: 1,
      qualityFindings: 6,
      unmappedCodes: 1,
    });
    const scheduler = await api.server.runtime.queues.sync.getJobScheduler(schedulerId('alpha'));
    expect(alpha.nextRunAt).toBe(new Date(scheduler!.next!).toISOString());
    expect(beta).toMatchObject({ id: 'beta', health: 'never', failedRunsInARow: 0 });
    expect(beta.nextRunAt).toBeUndefined();
    expect(beta.lastRun).toBeUndefined();
  });

  it('when one centre is read, then its recent runs come newest first', async () => {
    const res = await call(`${api.url}/api/centres/alpha`, { key: api.keys.viewer });
    expect(res.status).toBe(200);
    expect(res.body.recentRuns.map((r: { status: string }) => r.status)).toEqual([
      'failed',
      'succeeded',
    ]);
  });

  it('when runs are listed with a centre and limit, then only that many of that centre come back, and one run reads in full', async () => {
    const list = await call(`${api.url}/api/runs?centre=alpha&limit=1`, { key: api.keys.viewer });
    expect(list.status).toBe(200);
    expect(list.body.runs).toHaveLength(1);
    const run = list.body.runs[0];
    expect(run).toMatchObject({ centreId: 'alpha', status: 'failed' });
    const detail = await call(`${api.url}/api/runs/${run.runId}`, { key: api.keys.viewer });
    expect(detail.status).toBe(200);
    expect(detail.body).toMatchObject({ runId: run.runId, errors: [{ step: 'token' }] });
    const none = await call(`${api.url}/api/runs?centre=beta`, { key: api.keys.viewer });
    expect(none.body.runs).toEqual([]);
  });

  it('when the quality report is read, then it has unmapped codes with counts and examples, visits without PGA and implausible values', async () => {
    const res = await call(`${api.url}/api/centres/alpha/quality`, { key: api.keys.viewer });
    expect(res.status).toBe(200);
    expect(res.body.unmappedCodes[0]).toEqual({
      field: 'pga',
      code: 'http://centre.example/pga-answer|Z9',
      count: 2,
      exampleResource: 'Observation/obs-17',
    });
    expect(res.body.visitsWithoutPga.count).toBe(3);
    expect(res.body.implausibleValues[0]).toMatchObject({ field: 'height', count: 1 });
  });

  it('when an admin runs the onboarding check of a centre whose EHR is unreachable, then the report says which step failed and what to do', async () => {
    const res = await call(`${api.url}/api/centres/alpha/check`, {
      key: api.keys.admin,
      method: 'POST',
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ centreId: 'alpha', ok: false });
    const failed = res.body.steps.find((s: { status: string }) => s.status === 'failed');
    expect(failed).toBeDefined();
    expect(failed.reason).toBeTruthy();
    expect(failed.hint).toBeTruthy();
  });

  it('when an operator asks for a sync, then a queued run and a job carrying its id exist; a second request gets 409 with that run id', async () => {
    const first = await call(`${api.url}/api/centres/beta/sync`, {
      key: api.keys.operator,
      method: 'POST',
      body: { mode: 'full' },
    });
    expect(first.status).toBe(202);
    expect(first.headers.get('location')).toBe(`/api/runs/${first.body.runId}`);
    expect(first.body).toMatchObject({ status: 'queued', centreId: 'beta', mode: 'full' });
    const run = await api.server.runtime.runStore.get(first.body.runId);
    expect(run).toMatchObject({ status: 'queued', reason: 'manual', mode: 'full' });
    const job = await api.server.runtime.queues.sync.getJob(first.body.jobId);
    expect(job?.data).toEqual({
      centreId: 'beta',
      mode: 'full',
      reason: 'manual',
      runId: first.body.runId,
    });

    const second = await call(`${api.url}/api/centres/beta/sync`, {
      key: api.keys.admin,
      method: 'POST',
      body: { mode: 'incremental' },
    });
    expect(second.status).toBe(409);
    expect(second.body).toMatchObject({ status: 409, runId: first.body.runId });

    const centre = await call(`${api.url}/api/centres/beta`, { key: api.keys.viewer });
    expect(centre.body.syncing).toBe(true);

    // Once the job is gone (e.g. a crashed worker's record left "queued"), a new sync is allowed.
    await job!.remove();
    const third = await call(`${api.url}/api/centres/beta/sync`, {
      key: api.keys.operator,
      method: 'POST',
      body: {},
    });
    expect(third.status).toBe(202);
    expect(third.body.mode).toBe('incremental');
    await (await api.server.runtime.queues.sync.getJob(third.body.jobId))?.remove();
  });

  it('when the registry rejects a submission, then it is listed with reason and attempts, counted on its centre, and a retry delivers it', async () => {
    const [visit] = await enqueueVisits('alpha', ['enc-retry']);
    registry.faults.rejectSubmission(visit!.submissionId, 'unknown diagnosis code');
    await waitFor(async () => (await stateOf(visit!.submissionId)) === 'failed', 15_000, 'fail');

    const list = await call(`${api.url}/api/submissions/failed?centre=alpha`, {
      key: api.keys.viewer,
    });
    expect(list.status).toBe(200);
    expect(list.body.total).toBe(1);
    expect(list.body.items[0]).toMatchObject({
      jobId: visit!.submissionId,
      centreId: 'alpha',
      kind: 'visit',
      attemptsMade: 1,
      permanent: true,
    });
    expect(list.body.items[0].failedReason).toContain('unknown diagnosis code');
    expect(list.body.items[0].failedAt).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(JSON.stringify(list.body)).not.toContain(visit!.patientKey);
    const other = await call(`${api.url}/api/submissions/failed?centre=beta`, {
      key: api.keys.viewer,
    });
    expect(other.body.total).toBe(0);

    const centres = await call(`${api.url}/api/centres`, { key: api.keys.viewer });
    expect(centres.body.centres[0].failedSubmissions).toBe(1);

    const denied = await call(`${api.url}/api/submissions/failed/${visit!.submissionId}/retry`, {
      key: api.keys.viewer,
      method: 'POST',
    });
    expect(denied.status).toBe(403);

    registry.faults.clear();
    const retry = await call(`${api.url}/api/submissions/failed/${visit!.submissionId}/retry`, {
      key: api.keys.operator,
      method: 'POST',
    });
    expect(retry.status).toBe(202);
    await waitFor(async () => (await stateOf(visit!.submissionId)) === 'completed', 15_000, 'done');
    expect(registry.submissions().map((s) => s.submissionId)).toContain(visit!.submissionId);

    const again = await call(`${api.url}/api/submissions/failed/${visit!.submissionId}/retry`, {
      key: api.keys.operator,
      method: 'POST',
    });
    expect(again.status).toBe(409);
    expect(again.body.state).toBe('completed');
    const unknown = await call(
      `${api.url}/api/submissions/failed/${'0'.repeat(32)}-${'0'.repeat(16)}/retry`,
      {
        key: api.keys.operator,
        method: 'POST',
      },
    );
    expect(unknown.status).toBe(404);
  });

  it('when a failed submission is resolved, then it leaves the failed list and the resolved list records who, when and why without the content', async () => {
    const [visit] = await enqueueVisits('alpha', ['enc-resolve']);
    registry.faults.rejectSubmission(visit!.submissionId, 'patient withdrew consent');
    await waitFor(async () => (await stateOf(visit!.submissionId)) === 'failed', 15_000, 'fail');

    const res = await call(`${api.url}/api/submissions/failed/${visit!.submissionId}/resolve`, {
      key: api.keys.operator,
      method: 'POST',
      body: { note: 'withdrawn: not to be sent' },
    });
    expect(res.status).toBe(200);
    expect(res.body.resolved).toMatchObject({
      jobId: visit!.submissionId,
      resolvedBy: 'operator-key',
      note: 'withdrawn: not to be sent',
    });
    expect(Date.now() - Date.parse(res.body.resolved.resolvedAt)).toBeLessThan(60_000);

    const failed = await call(`${api.url}/api/submissions/failed?centre=alpha`, {
      key: api.keys.viewer,
    });
    expect(failed.body.items.map((i: { jobId: string }) => i.jobId)).not.toContain(
      visit!.submissionId,
    );
    const resolved = await call(`${api.url}/api/submissions/resolved?centre=alpha`, {
      key: api.keys.viewer,
    });
    expect(resolved.body.items[0]).toMatchObject({
      jobId: visit!.submissionId,
      resolvedBy: 'operator-key',
      failedReason: expect.stringContaining('withdrew consent'),
    });
    expect(resolved.body.items[0]).not.toHaveProperty('submission');
    expect(JSON.stringify(resolved.body)).not.toContain(visit!.patient.birthDate);
    const elsewhere = await call(`${api.url}/api/submissions/resolved?centre=beta`, {
      key: api.keys.viewer,
    });
    expect(elsewhere.body.items).toEqual([]);

    const twice = await call(`${api.url}/api/submissions/failed/${visit!.submissionId}/resolve`, {
      key: api.keys.operator,
      method: 'POST',
      body: { note: 'again' },
    });
    expect(twice.status).toBe(409);
    expect(twice.body.state).toBe('resolved');
  });

  it('when two resolves, or a resolve and a retry, race for one failed submission, then one wins, one record is written, the job is gone from Redis and the loser gets 409', async () => {
    const [first, second] = await enqueueVisits('alpha', ['enc-race-1', 'enc-race-2']);
    for (const v of [first!, second!]) registry.faults.rejectSubmission(v.submissionId, 'bad');
    await waitFor(
      async () =>
        (await stateOf(first!.submissionId)) === 'failed' &&
        (await stateOf(second!.submissionId)) === 'failed',
      15_000,
      'both to fail',
    );
    const resolve = (id: string, note: string) =>
      call(`${api.url}/api/submissions/failed/${id}/resolve`, {
        key: api.keys.operator,
        method: 'POST',
        body: { note },
      });
    const retry = (id: string) =>
      call(`${api.url}/api/submissions/failed/${id}/retry`, {
        key: api.keys.operator,
        method: 'POST',
      });
    const resolvedRecords = async (id: string) =>
      (
        await call(`${api.url}/api/submissions/resolved?centre=alpha&limit=1000`, {
          key: api.keys.viewer,
        })
      ).body.items.filter((r: { jobId: string }) => r.jobId === id).length;

    const double = await Promise.all([
      resolve(first!.submissionId, 'one'),
      resolve(first!.submissionId, 'two'),
      resolve(first!.submissionId, 'three'),
    ]);
    expect(double.map((r) => r.status).sort()).toEqual([200, 409, 409]);
    expect(await resolvedRecords(first!.submissionId)).toBe(1);
    // Removed as Job.remove removes it: no hash, logs or other keys of the job are left.
    const { redis } = api.server.runtime;
    expect(await redis.keys(`${api.prefix}:submissions:${first!.submissionId}*`)).toEqual([]);

    registry.faults.clear();
    const [resolved, retried] = await Promise.all([
      resolve(second!.submissionId, 'not needed'),
      retry(second!.submissionId),
    ]);
    expect([resolved.status, retried.status].sort()).toEqual(
      resolved.status === 200 ? [200, 409] : [202, 409],
    );
    if (resolved.status === 200) {
      expect(retried.body.state).toBe('resolved');
      expect(await resolvedRecords(second!.submissionId)).toBe(1);
      expect(await stateOf(second!.submissionId)).toBeUndefined();
    } else {
      expect(await resolvedRecords(second!.submissionId)).toBe(0);
      await waitFor(
        async () => (await stateOf(second!.submissionId)) === 'completed',
        15_000,
        'the retried submission to be delivered',
      );
    }
  });

  it('when retry-all is asked for one centre, then every failed submission of that centre is retried', async () => {
    const visits = await enqueueVisits('beta', ['b1', 'b2', 'b3']);
    for (const v of visits) registry.faults.rejectSubmission(v.submissionId, 'registry down');
    await waitFor(
      async () =>
        (await Promise.all(visits.map((v) => stateOf(v.submissionId)))).every(
          (s) => s === 'failed',
        ),
      15_000,
      'three failures',
    );
    registry.faults.clear();
    const res = await call(`${api.url}/api/submissions/failed/retry-all`, {
      key: api.keys.operator,
      method: 'POST',
      body: { centre: 'beta' },
    });
    expect(res.status).toBe(202);
    expect(res.body.retried).toBe(3);
    await waitFor(
      async () =>
        (await Promise.all(visits.map((v) => stateOf(v.submissionId)))).every(
          (s) => s === 'completed',
        ),
      15_000,
      'all delivered',
    );
  });

  it('when alerts are evaluated, then the centre whose last run failed (threshold 1) is alerting and shown everywhere', async () => {
    const evaluated = await call(`${api.url}/api/alerts/evaluate`, {
      key: api.keys.operator,
      method: 'POST',
    });
    expect(evaluated.status).toBe(200);
    const alerts = await call(`${api.url}/api/alerts`, { key: api.keys.viewer });
    expect(alerts.body.alerts).toEqual([
      expect.objectContaining({ centreId: 'alpha', kind: 'failing', threshold: 1 }),
    ]);
    const centres = await call(`${api.url}/api/centres`, { key: api.keys.viewer });
    expect(centres.body.centres[0]).toMatchObject({ health: 'alert' });
    expect(centres.body.centres[0].alerts).toHaveLength(1);
    const metrics = await fetch(`${api.url}/metrics`, {
      headers: { authorization: `Bearer ${api.keys.viewer}` },
    });
    expect(await metrics.text()).toMatch(/lhn_alerts_active\{centre="alpha",kind="failing"\} 1/);
  });

  it('when /metrics is scraped, then it has the lhn_ metrics and current queue depths', async () => {
    const { runtime } = api.server;
    const job: Job = await runtime.queues.sync.add('sync', {
      centreId: 'beta',
      mode: 'full',
      reason: 'manual',
    });
    const res = await fetch(`${api.url}/metrics`, {
      headers: { authorization: `Bearer ${api.keys.viewer}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/plain');
    const text = await res.text();
    for (const name of [
      'lhn_fhir_requests_total',
      'lhn_fhir_request_duration_seconds',
      'lhn_resources_pulled_total',
      'lhn_submissions_enqueued_total',
      'lhn_submissions_delivered_total',
      'lhn_submissions_failed_total',
      'lhn_sync_runs_total',
      'lhn_queue_jobs',
      'lhn_alerts_active',
    ])
      expect(text).toContain(`# TYPE ${name}`);
    expect(text).toMatch(/lhn_queue_jobs\{queue="sync",state="waiting"\} 1/);
    expect(text).toMatch(/lhn_queue_jobs\{queue="submissions",state="completed"\} [1-9]/);
    await job.remove();
  });
});
