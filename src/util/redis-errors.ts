// What an ioredis failure means to the caller: Redis unreachable (the same call may work again
// once it is back), as opposed to a bug or bad data.

/** True for errors that mean Redis is unreachable (the request may work again later). */
export function isRedisUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  return (
    err.name === 'MaxRetriesPerRequestError' ||
    err.message === 'Connection is closed.' ||
    /ECONNREFUSED|ETIMEDOUT|EHOSTUNREACH/.test(err.message)
  );
}
