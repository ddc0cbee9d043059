// The server in auto mode with real registries on loopback: a registry that is
// down gets the mirror, one that recovers is used directly again, a mirror
// that is down gets nothing; the state, the metrics and the CLI explain it.
import t from 'tap'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { startServer, type RunningServer } from '../../server/serve.js'
import { createCa, issueServing, type KeyPairPem } from '../../server/tls/certs.js'
import type { LookupFunction } from '../../server/reachability/probe.js'
import { podReview, runCli, until } from '../support/helpers.js'

// *.test names resolve to loopback, so the registries can carry names the mirror grammar accepts.
const lookup: LookupFunction = (hostname, options, callback) => {
  if (!hostname.endsWith('.test'))
    return callback(Object.assign(new Error(`lookup ${hostname}`), { code: 'ENOTFOUND' }), options.all ? [] : '')
  if (options.all) callback(null, [{ address: '127.0.0.1', family: 4 }])
  else callback(null, '127.0.0.1', 4)
}

class FakeRegistry {
  private server?: https.Server
  constructor(
    readonly port: number,
    private readonly tls: KeyPairPem,
  ) {}
  async up(): Promise<void> {
    const server = https.createServer({ cert: this.tls.certPem, key: this.tls.keyPem }, (_req, res) => {
      res.writeHead(401, { 'www-authenticate': 'Bearer realm="x"' }).end('{}')
    })
    server.listen(this.port, '127.0.0.1')
    await once(server, 'listening')
    this.server = server
  }
  async down(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
}

async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const { port } = s.address() as AddressInfo
  await new Promise((resolve) => s.close(resolve))
  return port
}

const ca = await createCa('service-test-ca', 1)
const tls = await issueServing(ca, { dnsNames: ['registry.test', 'mirror.test', 'steady.test'], validDays: 1 })
const [registryPort, mirrorPort, steadyPort] = [await freePort(), await freePort(), await freePort()]
const registry = new FakeRegistry(registryPort, tls)
const mirror = new FakeRegistry(mirrorPort, tls)
const steady = new FakeRegistry(steadyPort, tls)
const REGISTRY = `registry.test:${registryPort}`
const MIRROR = `mirror.test:${mirrorPort}`
const IMAGE = `${REGISTRY}/team/app:1.0`
const MIRRORED = `${MIRROR}/proxy/team/app:1.0`

const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-reach-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const configPath = join(dir, 'config.yaml')
await writeFile(
  configPath,
  stringify({
    mirror: { hosts: { [REGISTRY]: `${MIRROR}/proxy`, [`steady.test:${steadyPort}`]: `${MIRROR}/steady` } },
    registries: [REGISTRY, `steady.test:${steadyPort}`],
    mode: 'auto',
    reachability: {
      unknown: 'direct',
      probes: {
        intervalSeconds: 0.3,
        timeoutSeconds: 0.5,
        recheckSeconds: 0.1,
        maxBackoffSeconds: 0.6,
        jitter: 0.1,
        failureThreshold: 1,
        successThreshold: 2,
      },
    },
  }),
)

await mirror.up()
await steady.up()
const server: RunningServer = await startServer({
  configPath,
  port: 0,
  host: '127.0.0.1',
  metricsPort: 0,
  devCertDir: dir,
  certReloadIntervalMs: 60_000,
  shutdownDelayMs: 0,
  env: {},
  logger: pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' }),
  kube: null,
  reachabilityProbe: { ca: ca.certPem, lookup, env: {} },
})
t.teardown(async () => {
  await server.close()
  await Promise.all([registry.down(), mirror.down(), steady.down()])
})

const ops = `http://127.0.0.1:${server.metricsPort}`

async function stateOf(name: string): Promise<any> {
  const body = (await (await fetch(`${ops}/state`)).json()) as { registries: any[] }
  return body.registries.find((r) => r.registry === name)
}

async function admit(uid: string): Promise<{ image: string; warnings: string[] }> {
  const res = await server.webhook.inject({ method: 'POST', url: '/mutate', payload: podReview(uid, [IMAGE]) })
  const response = res.json().response
  const patch = response.patch ? JSON.parse(Buffer.from(response.patch, 'base64').toString()) : []
  const op = patch.find((o: { path: string }) => o.path === '/spec/containers/0/image')
  return { image: op?.value ?? IMAGE, warnings: response.warnings ?? [] }
}

t.test('the probe set: the configured registries and the mirror, nothing else', async (t) => {
  t.same(server.reachability?.features.probes.sort(), [MIRROR, REGISTRY, `steady.test:${steadyPort}`].sort())
  t.equal(server.reachability?.features.persistence, undefined, 'no API server: nothing persisted')
  t.equal(server.reachability?.features.learning, false)
})

t.test('a registry that refuses connections gets the mirror, and the warning says why', async (t) => {
  const s = await until('registry unreachable', async () =>
    (await stateOf(REGISTRY))?.status === 'unreachable' ? stateOf(REGISTRY) : undefined,
  )
  t.hasStrict(s, { state: 'unreachable', decidedBy: { source: 'probe', outcome: 'fail', detail: 'connection refused' } })
  const a = await admit('down-1')
  t.equal(a.image, MIRRORED)
  t.match(a.warnings.join('\n'), new RegExp(`registry ${REGISTRY} is unreachable \\(probe: connection refused`))
})

t.test('when it recovers it is used directly again', async (t) => {
  await registry.up()
  await until('registry reachable', async () => ((await stateOf(REGISTRY))?.status === 'reachable' ? true : undefined))
  const a = await admit('up-1')
  t.equal(a.image, IMAGE, 'kept')
  t.same(a.warnings, [])
  const s = await stateOf(REGISTRY)
  t.match(s.evidence, /^probe: HTTP 401 in \d+ ms/)
  t.ok(Date.parse(s.since) > 0)
})

t.test("the CLI explains a decision with the server's evidence", async (t) => {
  const r = await runCli(['rewrite', IMAGE, '-c', configPath, '--url', ops])
  t.equal(r.code, 0, r.stderr)
  t.match(
    r.stdout,
    new RegExp(`kept: registry ${REGISTRY} is reachable \\(probe: HTTP 401 in \\d+ ms, \\d+x, since .*\\(${ops}/state\\)\\)`),
  )
  const offline = await runCli(['rewrite', IMAGE, '-c', configPath])
  t.match(offline.stdout, /is unknown \(no learned state consulted/, 'without --url nothing learned is claimed')
})

t.test('while the mirror is down nothing is rewritten to it', async (t) => {
  await registry.down()
  await mirror.down()
  await until('both down', async () =>
    (await stateOf(REGISTRY))?.status === 'unreachable' && (await stateOf(MIRROR))?.status === 'unreachable' ? true : undefined,
  )
  const a = await admit('mirror-down')
  t.equal(a.image, IMAGE, 'pulled directly rather than from a dead mirror')
  const res = await server.webhook.inject({ method: 'POST', url: '/mutate', payload: podReview('mirror-down-2', [IMAGE]) })
  t.equal(res.json().response.patch, undefined)
  const metrics = await (await fetch(`${ops}/metrics`)).text()
  t.match(metrics, new RegExp(`mirrorhook_images_kept_total\\{reason="mirror-unreachable"\\} [1-9]`))
})

t.test('state on the ops listener, in metrics and through `mirrorhook state`', async (t) => {
  const metrics = await (await fetch(`${ops}/metrics`)).text()
  t.match(metrics, new RegExp(`mirrorhook_registry_state\\{registry="${REGISTRY}",state="unreachable"\\} 1`))
  t.match(metrics, new RegExp(`mirrorhook_registry_state\\{registry="${REGISTRY}",state="reachable"\\} 0`))
  t.match(metrics, new RegExp(`mirrorhook_registry_probes_total\\{registry="${REGISTRY}",result="reachable"\\} [1-9]`))
  t.match(metrics, new RegExp(`mirrorhook_registry_probe_duration_seconds_count\\{registry="${MIRROR}"\\} [1-9]`))
  t.match(metrics, /mirrorhook_registry_state_transitions_total\{registry="[^"]+",to="reachable"\} [1-9]/)

  const state = await (await fetch(`${ops}/state`)).json()
  t.equal(state.probesOffline, false, 'one target still answers: probe failures count')
  t.match(state.probes, [{ registry: String, nextAt: String }])

  const r = await runCli(['state', '--url', ops])
  t.equal(r.code, 0, r.stderr)
  const lines = r.stdout.split('\n')
  t.match(lines[0], /^REGISTRY\s+STATE\s+SINCE\s+EXPIRES\s+EVIDENCE$/)
  t.match(
    r.stdout,
    new RegExp(`${MIRROR.replace('.', '\\.')}\\s+unreachable\\s+\\S+Z \\(\\d+s ago\\)\\s+\\S+\\s+probe: connection refused`),
  )
  t.match(r.stdout, new RegExp(`steady\\.test:${steadyPort}\\s+reachable`))
  t.match(r.stdout, new RegExp(`source: ${ops}/state`))
  const json = await runCli(['state', '--url', ops, '-o', 'json'])
  t.match(JSON.parse(json.stdout), { version: 1, registries: Array })
  const closed = await freePort()
  const bad = await runCli(['state', '--url', `http://127.0.0.1:${closed}`])
  t.equal(bad.code, 1)
  t.equal(bad.stderr, `mirrorhook: cannot reach http://127.0.0.1:${closed}/state: ECONNREFUSED\n`)
})
