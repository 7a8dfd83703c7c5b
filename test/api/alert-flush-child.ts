// Child for the alert outbox crash test: one serve process that evaluates alerts once and is
// killed (SIGKILL) by the test while the webhook is still answering. Args: prefix, webhook URL.
import { createAlertMonitor } from '../../src/alerts/alert-monitor.js';
import { createRunStore } from '../../src/sync/run-store.js';
import { parseServiceConfig } from '../../src/config/service.js';
import { silentLogger } from '../../src/util/logger.js';
import { SECRET, makeCentre } from './helpers.js';
import { testRedis } from '../sync/helpers.js';

const [prefix, url] = process.argv.slice(2) as [string, string];
const redis = testRedis();
const monitor = createAlertMonitor({
  redis,
  prefix,
  centres: [makeCentre('alpha', { alerts: { failuresInARow: 2 } })],
  runStore: createRunStore(redis, prefix),
  config: parseServiceConfig({ pseudonymSecret: SECRET, alerts: { webhookUrl: url } }).alerts,
  logger: silentLogger,
  webhookTimeoutMs: 60_000,
  flushLeaseMs: 600,
});
await monitor.evaluate();
