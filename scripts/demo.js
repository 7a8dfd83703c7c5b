#!/usr/bin/env node
// `npm run demo` bootstrap. Plain JavaScript with no dependencies, because it runs before
// they are installed: it installs them if missing, finds or starts a Redis, then hands
// over to `lhn-bridge demo`, which runs the whole job on the embedded default.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const say = (msg) => process.stdout.write(`demo: ${msg}\n`);

function run(cmd, cmdArgs, options = {}) {
  const result = spawnSync(cmd, cmdArgs, { stdio: 'inherit', cwd: root, ...options });
  return result.status === 0;
}

function dependenciesMissing() {
  const marker = join(root, 'node_modules', '.package-lock.json');
  if (!existsSync(marker)) return true;
  return statSync(join(root, 'package-lock.json')).mtimeMs > statSync(marker).mtimeMs + 1000;
}

/** Resolves true when a Redis answers PING on host:port within the timeout. */
function redisAnswers(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = createConnection({ host, port });
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function hasCommand(name) {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

async function findOrStartRedis() {
  if (process.env.REDIS_URL) {
    say(`using REDIS_URL`);
    return { url: process.env.REDIS_URL };
  }
  if (await redisAnswers('127.0.0.1', 6379)) {
    say('using the Redis on 127.0.0.1:6379');
    return { url: 'redis://127.0.0.1:6379' };
  }
  if (!hasCommand('redis-server')) {
    const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
    if (!isRoot) {
      say('no Redis found and redis-server is not installed.');
      say(
        'install it (Debian/Ubuntu: sudo apt-get install redis-server), or set REDIS_URL, then run again.',
      );
      process.exit(1);
    }
    say('installing redis-server with apt-get');
    if (
      !run('apt-get', ['update', '-qq']) ||
      !run('apt-get', ['install', '-y', '-qq', 'redis-server'], {
        env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      })
    ) {
      say('apt-get could not install redis-server; install it by hand or set REDIS_URL.');
      process.exit(1);
    }
  }
  const port = await freePort();
  const dir = join(root, '.demo', 'redis');
  mkdirSync(dir, { recursive: true });
  say(`starting a private redis-server on 127.0.0.1:${port}`);
  const child = spawn(
    'redis-server',
    [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
    ],
    { stdio: 'ignore' },
  );
  for (let i = 0; i < 50 && !(await redisAnswers('127.0.0.1', port, 200)); i += 1) {
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!(await redisAnswers('127.0.0.1', port))) {
    child.kill();
    say('the private redis-server did not start');
    process.exit(1);
  }
  return { url: `redis://127.0.0.1:${port}`, child };
}

if (dependenciesMissing()) {
  say('installing dependencies (npm ci)');
  if (!run('npm', ['ci', '--no-audit', '--no-fund'])) process.exit(1);
}

const redis = await findOrStartRedis();
const demo = spawn(
  process.execPath,
  [join(root, 'bin', 'lhn-bridge.js'), 'demo', '--redis-url', redis.url, ...args],
  {
    stdio: 'inherit',
    cwd: root,
  },
);
const forward = (signal) => demo.kill(signal);
process.on('SIGINT', forward);
process.on('SIGTERM', forward);
demo.on('exit', (code, signal) => {
  redis.child?.kill();
  process.exit(code ?? (signal ? 1 : 0));
});
