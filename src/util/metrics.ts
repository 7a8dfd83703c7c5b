// Prometheus metrics, defined once. Each process (serve, worker) creates one registry;
// modules receive the Metrics object rather than touching a global.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface Metrics {
  registry: Registry;
  fhirRequests: Counter<'centre' | 'resource_type' | 'status'>;
  fhirRequestSeconds: Histogram<'centre' | 'resource_type'>;
  resourcesPulled: Counter<'centre' | 'resource_type'>;
  submissionsEnqueued: Counter<'centre' | 'kind'>;
  submissionsDelivered: Counter<'centre'>;
  submissionsFailed: Counter<'centre' | 'permanent'>;
  syncRuns: Counter<'centre' | 'outcome'>;
  queueDepth: Gauge<'queue' | 'state'>;
  alertsActive: Gauge<'centre' | 'kind'>;
  alertEventsParked: Counter<'reason'>;
}

/** Creates a fresh registry with every lhn-bridge metric (and Node defaults if asked). */
export function createMetrics(options: { defaultMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  return {
    registry,
    fhirRequests: new Counter({
      name: 'lhn_fhir_requests_total',
      help: 'FHIR requests sent to centre EHRs, by centre, resource type and HTTP status (or "error")',
      labelNames: ['centre', 'resource_type', 'status'],
      registers,
    }),
    fhirRequestSeconds: new Histogram({
      name: 'lhn_fhir_request_duration_seconds',
      help: 'FHIR request latency',
      labelNames: ['centre', 'resource_type'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    resourcesPulled: new Counter({
      name: 'lhn_resources_pulled_total',
      help: 'FHIR resources pulled, by centre and type',
      labelNames: ['centre', 'resource_type'],
      registers,
    }),
    submissionsEnqueued: new Counter({
      name: 'lhn_submissions_enqueued_total',
      help: 'Registry submissions enqueued (new versions only), by kind (visit | retraction)',
      labelNames: ['centre', 'kind'],
      registers,
    }),
    submissionsDelivered: new Counter({
      name: 'lhn_submissions_delivered_total',
      help: 'Registry submissions accepted by the registry',
      labelNames: ['centre'],
      registers,
    }),
    submissionsFailed: new Counter({
      name: 'lhn_submissions_failed_total',
      help: 'Registry delivery failures; permanent="true" when the job will not be retried',
      labelNames: ['centre', 'permanent'],
      registers,
    }),
    syncRuns: new Counter({
      name: 'lhn_sync_runs_total',
      help: 'Sync runs finished, by outcome (succeeded | failed)',
      labelNames: ['centre', 'outcome'],
      registers,
    }),
    queueDepth: new Gauge({
      name: 'lhn_queue_jobs',
      help: 'Jobs in each queue by state',
      labelNames: ['queue', 'state'],
      registers,
    }),
    alertsActive: new Gauge({
      name: 'lhn_alerts_active',
      help: '1 while an alert is raised for a centre (kind: stale | failing)',
      labelNames: ['centre', 'kind'],
      registers,
    }),
    alertEventsParked: new Counter({
      name: 'lhn_alert_events_parked_total',
      help: 'Alert webhook events parked undelivered (reason: refused = a permanent 4xx, attempts = too many failed posts)',
      labelNames: ['reason'],
      registers,
    }),
  };
}
