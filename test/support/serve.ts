// `mirrorhook serve` as a child process (the built CLI when it is up to date: helpers.ts
// cliCommand), the way a kubelet runs and stops it: its configuration written to a temporary
// directory, development certificates there, TLS and metrics on free loopback ports, JSON log
// lines read from stdout. Used by the SIGTERM tests
// (test/unit/shutdown-signal.test.ts without a cluster, test/e2e/shutdown.test.ts with one).
import { type ChildProcessByStdio, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { type Agent, request } from 'node:https'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { cliCommand, until } from './helpers.js'

export interface Logged {
  msg: string
  [key: string]: unknown
}

export interface ServeProcess {
  readonly child: ChildProcessByStdio<null, Readable, Readable>
  /** The temporary directory: config.yaml, ca.crt, tls.crt; removed at teardown. */
  readonly dir: string
  /** Every JSON log line so far, in order. */
  readonly lines: Logged[]
  /** What the process wrote to stderr so far. */
  stderr(): string
  /** The webhook's TLS port and the metrics port, from the `mirrorhook listening` line. */
  readonly port: number
  readonly metricsPort: number
  /** The development CA that signed the serving certificate. */
  readonly ca: string
  /** The first log line whose message starts with `prefix`, waiting up to `ms` for it. */
  logged(prefix: string, ms?: number): Promise<Logged>
  /** Exit code and signal, waiting up to `ms` for the process to end. */
  exit(ms?: number): Promise<[number | null, NodeJS.Signals | null]>
}

/**
 * Starts `mirrorhook serve --config <config>` with a minimal environment (PATH, HOME set to the
 * temporary directory, LOG_LEVEL info, and NODE_OPTIONS, which carries the tests' loopback-only
 * guard) plus `env`, and waits until it listens. The process is killed at teardown if it still runs.
 */
export async function startServe(
  t: Test,
  options: { config: unknown; env?: Record<string, string>; listenMs?: number },
): Promise<ServeProcess> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-serve-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'config.yaml'), stringify(options.config))
  const args = ['serve', '--config', join(dir, 'config.yaml'), '--host', '127.0.0.1', '--port', '0', '--metrics-port', '0']
  const child = spawn(process.execPath, [...cliCommand(), ...args, '--dev-cert-dir', dir], {
    env: { PATH: process.env.PATH ?? '', HOME: dir, NODE_OPTIONS: process.env.NODE_OPTIONS ?? '', LOG_LEVEL: 'info', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: Logged[] = []
  let buffered = ''
  let stderr = ''
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    const parts = buffered.split('\n')
    buffered = parts.pop() ?? ''
    for (const line of parts.filter(Boolean)) lines.push(JSON.parse(line) as Logged)
  })
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  const running = () => child.exitCode === null && child.signalCode === null
  t.teardown(() => {
    if (running()) child.kill('SIGKILL')
  })
  const logged = (prefix: string, ms = 60_000) =>
    until(`a log line "${prefix}…"`, async () => lines.find((l) => l.msg.startsWith(prefix)), ms)
  const listening = await logged('mirrorhook listening', options.listenMs ?? 60_000)
  return {
    child,
    dir,
    lines,
    stderr: () => stderr,
    port: listening.port as number,
    metricsPort: listening.metricsPort as number,
    ca: await readFile(join(dir, 'ca.crt'), 'utf8'),
    logged,
    exit: (ms = 60_000) => until('the process to exit', async () => (running() ? undefined : exited), ms),
  }
}

export interface Answer {
  status: number
  /** The Connection header: keep-alive, or close when the server is draining. */
  connection?: string
  body: string
}

/** POSTs `body` to /mutate through `agent` and reads the whole answer. */
export function postReview(port: number, agent: Agent, body: string): Promise<Answer> {
  const inFlight = postInFlight(port, agent, body, Promise.resolve())
  return inFlight.answered
}

export interface InFlight {
  /** The TLS connection, once its handshake is done: the request is in flight from then on. */
  readonly connected: Promise<Socket>
  /** The answer: status, the Connection header, the body. */
  readonly answered: Promise<Answer>
}

/**
 * POSTs `body` to /mutate on a connection of its own (`agent`), but sends only its first ten
 * bytes until `release` resolves: a review still arriving, for example, when SIGTERM comes.
 */
export function postInFlight(port: number, agent: Agent, body: string, release: Promise<unknown>): InFlight {
  let onConnected: (s: Socket) => void = () => {}
  let onError: (e: Error) => void = () => {}
  const connected = new Promise<Socket>((resolve, reject) => {
    onConnected = resolve
    onError = reject
  })
  // Whoever awaits the answer sees the error; the handshake promise only must not hang.
  connected.catch(() => {})
  const answered = new Promise<Answer>((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = ''
        res.on('data', (c) => (text += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, body: text }))
      },
    )
    req.on('error', (e) => {
      onError(e)
      reject(e)
    })
    req.on('socket', (socket) => socket.once('secureConnect', () => onConnected(socket)))
    req.write(body.slice(0, 10))
    void release.then(() => req.end(body.slice(10)))
  })
  return { connected, answered }
}
