// For test files only (it registers a vitest hook): helpers.ts stays importable by the child
// processes that tests start.
import type { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { deletePrefix, testPrefix, testRedis } from './helpers.js';

/**
 * For a describe block: a Redis connection and a prefix of its own, the prefix's keys deleted
 * and the connection closed after the block's tests.
 */
export function useTestRedis(): { redis: Redis; prefix: string } {
  const redis = testRedis();
  const prefix = testPrefix();
  afterAll(async () => {
    await deletePrefix(redis, prefix);
    await redis.quit();
  });
  return { redis, prefix };
}
