// `mirrorhook serve` as a child process, as a kubelet stops it: SIGTERM while clients keep
// keep-alive connections open (the API server keeps idle ones for 90 s). The process must
// close them, answer what is in flight, run its final steps and exit on its own.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { podReview, until } from '../support/helpers.js'

const CLI = new URL('../../server/cli.ts', import.meta.url).pathname

interface Logged {
  msg: string
  [key: string]: unknown
}

t.test('SIGTERM with keep-alive connections open: they are closed, final steps run, the process exits', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-sigterm-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  // Probes off: nothing may leave loopback. Only keys every version of the configuration knows.
  await writeFile(join(dir, 'config.yaml'), stringify({ reachability: { probes: { enabled: false } } }))
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      CLI,
      'serve',
      '--config',
      join(dir, 'config.yaml'),
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--metrics-port',
      '0',
      '--dev-cert-dir',
      dir,
    ],
    { env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const lines: Logged[] = []
  let stderr = ''
  let buffered = ''
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    const parts = buffered.split('\n')
    buffered = parts.pop() ?? ''
    for (const line of parts.filter(Boolean)) lines.push(JSON.parse(line) as Logged)
  })
  child.stderr.on('data', (chunk) => (stderr += chunk))
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })

  const listening = await until('the server to listen', async () => lines.find((l) => l.msg.startsWith('mirrorhook listening')), 60_000)
  const port = listening.port as number
  const metricsPort = listening.metricsPort as number
  const ca = await readFile(join(dir, 'ca.crt'), 'utf8')

  // A keep-alive client on each port, each holding an idle connection after one answer.
  const https = new HttpsAgent({ keepAlive: true, ca })
  const http = new HttpAgent({ keepAlive: true })
  t.teardown(() => {
    https.destroy()
    http.destroy()
  })
  const review = JSON.stringify(podReview('sigterm-1', ['nginx:1.25']))
  const answer = await new Promise<{ status: number; connection?: string }>((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port, path: '/mutate', method: 'POST', agent: https, headers: { 'content-type': 'application/json' } },
      (res) => res.resume().on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection })),
    )
    req.on('error', reject)
    req.end(review)
  })
  t.same(answer, { status: 200, connection: 'keep-alive' })
  await new Promise<void>((resolve, reject) =>
    httpRequest({ host: '127.0.0.1', port: metricsPort, path: '/metrics', agent: http }, (res) => res.resume().on('end', resolve))
      .on('error', reject)
      .end(),
  )
  const idle = [...Object.values(https.freeSockets).flat(), ...Object.values(http.freeSockets).flat()]
  t.equal(idle.length, 2, 'one idle keep-alive connection per port')
  const closedByServer = idle.map((s) => once(s!, 'close'))

  // A review in flight on another keep-alive connection (open before SIGTERM): its body is not complete at SIGTERM.
  const second = new HttpsAgent({ keepAlive: true, ca })
  t.teardown(() => second.destroy())
  let secured = false
  const inFlight = new Promise<{ status: number; connection?: string; uid: string }>((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        agent: second,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(review) },
      },
      (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, uid: JSON.parse(body).response.uid }),
        )
      },
    )
    req.on('error', reject)
    req.on('socket', (socket) => {
      closedByServer.push(once(socket, 'close'))
      socket.once('secureConnect', () => (secured = true))
    })
    req.write(review.slice(0, 10))
    void until('shutdown to begin', async () => lines.find((l) => l.msg.startsWith('shutting down'))).then(() => req.end(review.slice(10)))
  })
  await until('the in-flight connection to be open', async () => (secured ? true : undefined))

  child.kill('SIGTERM')
  t.same(
    await inFlight,
    { status: 200, connection: 'close', uid: 'sigterm-1' },
    'the in-flight review is answered, and its connection closed',
  )
  let closed = 0
  for (const c of closedByServer) void c.then(() => closed++)
  // Well below the 95 s idle timeout that would close them anyway.
  await until('the server to close every connection', async () => (closed === 3 ? true : undefined), 30_000)
  t.pass('the server closed every connection, none of the clients hung up')
  const [code, signal] = await until(
    'the process to exit',
    async () => (child.exitCode !== null || child.signalCode !== null ? exited : undefined),
    60_000,
  )
  t.equal(signal, null, stderr)
  t.equal(code, 0, 'exits cleanly on its own')
  t.ok(
    lines.some((l) => l.msg === 'shutdown: reachability stop done'),
    'the reachability component was stopped (without a cluster there is no state to write)',
  )
  t.same(lines.find((l) => l.msg === 'stopped')?.steps, ['reachability stop: done'], 'the final steps ran, then it stopped')
})
