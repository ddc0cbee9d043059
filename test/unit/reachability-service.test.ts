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
        // Down registries here refuse at once; a live one is never slower than this, even on a loaded
        // machine (with 0.5 s a late answer from the mirror once made it unreachable mid-test).
        timeoutSeconds: 5,
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

// The Prometheus text as `name{labels}` → value, so each series is compared whole.
function series(text: string): Map<string, number> {
  const out = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const at = line.lastIndexOf(' ')
    out.set(line.slice(0, at), Number(line.slice(at + 1)))
  }
  return out
}

// An ISO time as the evidence and warnings print it: to the second.
const toSecond = (iso: string) => `${iso.slice(0, 19)}Z`
const escape = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

async function admit(uid: string): Promise<{ image: string; warnings: string[] }> {
  const res = await server.webhook.inject({ method: 'POST', url: '/mutate', payload: podReview(uid, [IMAGE]) })
  const response = res.json().response
  const patch = response.patch ? JSON.parse(Buffer.from(response.patch, 'base64').toString()) : []
  const op = patch.find((o: { path: string }) => o.path === '/spec/containers/0/image')
  return { image: op?.value ?? IMAGE, warnings: response.warnings ?? [] }
}

t.test('the probe set: the configured registries and the mirror, nothing else', async (t) => {
  t.strictSame(server.reachability?.features.probes.sort(), [MIRROR, REGISTRY, `steady.test:${steadyPort}`].sort())
  t.equal(server.reachability?.features.persistence, undefined, 'no API server: nothing persisted')
  t.equal(server.reachability?.features.learning, false)
})

t.test('a registry that refuses connections gets the mirror, and the warning says why', async (t) => {
  const s = await until('registry unreachable, mirror reachable', async () =>
    (await stateOf(MIRROR))?.status === 'reachable' && (await stateOf(REGISTRY))?.status === 'unreachable' ? stateOf(REGISTRY) : undefined,
  )
  t.strictSame(
    { state: s.state, status: s.status, source: s.decidedBy.source, outcome: s.decidedBy.outcome, detail: s.decidedBy.detail },
    { state: 'unreachable', status: 'unreachable', source: 'probe', outcome: 'fail', detail: 'connection refused' },
  )
  // How many probes agreed (", 2x") grows while the test waits; the rest is exact.
  const refused = `probe: connection refused(, \\d+x)?, since ${escape(toSecond(s.since))}`
  t.match(s.evidence, new RegExp(`^${refused}$`))
  const a = await admit('down-1')
  t.equal(a.image, MIRRORED)
  // The registry stays down, so `since` (when it became unreachable) is the one read above.
  t.equal(a.warnings.length, 1)
  t.match(
    a.warnings[0],
    new RegExp(
      `^mirrorhook: c0: ${escape(IMAGE)} -> ${escape(MIRRORED)} \\(registry ${escape(REGISTRY)} is unreachable \\(${refused}\\)\\)$`,
    ),
  )
})

t.test('when it recovers it is used directly again', async (t) => {
  await registry.up()
  await until('registry reachable', async () => ((await stateOf(REGISTRY))?.status === 'reachable' ? true : undefined))
  const a = await admit('up-1')
  t.equal(a.image, IMAGE, 'kept')
  t.strictSame(a.warnings, [])
  const s = await stateOf(REGISTRY)
  t.equal(new Date(s.since).toISOString(), s.since, 'since is an ISO time')
  // The probe's time and how many probes agreed vary from run to run; the rest is exact.
  t.match(s.evidence, new RegExp(`^probe: HTTP 401 in \\d+ ms(, \\d+x)?, since ${escape(toSecond(s.since))}$`))
})

t.test("the CLI explains a decision with the server's evidence", async (t) => {
  const r = await runCli(['rewrite', IMAGE, '-c', configPath, '--url', ops])
  t.equal(r.code, 0, r.stderr)
  // The probe's time, how many probes agreed and when are the server's; the rest is exact.
  t.match(
    r.stdout,
    new RegExp(
      `^${escape(IMAGE)} kept: registry ${escape(REGISTRY)} is reachable \\(probe: HTTP 401 in \\d+ ms, \\d+x, since \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ \\(${escape(ops)}/state\\)\\)\\n$`,
    ),
  )
  const offline = await runCli(['rewrite', IMAGE, '-c', configPath])
  t.equal(offline.code, 0, offline.stderr)
  t.equal(
    offline.stdout,
    `${IMAGE} kept: registry ${REGISTRY} is unknown (no learned state consulted; --url or --from-cluster use what the server knows); reachability.unknown is direct\n`,
    'without --url nothing learned is claimed',
  )
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
  const metrics = series(await (await fetch(`${ops}/metrics`)).text())
  t.equal(metrics.get('mirrorhook_images_kept_total{reason="mirror-unreachable"}'), 2, 'the two reviews above')
  t.equal(metrics.get('mirrorhook_images_kept_total{reason="reachable"}'), 1, 'up-1')
  t.equal(metrics.get(`mirrorhook_image_rewrites_total{registry="${REGISTRY}"}`), 1, 'down-1')
})

t.test('state on the ops listener, in metrics and through `mirrorhook state`', async (t) => {
  const metrics = series(await (await fetch(`${ops}/metrics`)).text())
  for (const [state, value] of [
    ['reachable', 0],
    ['unreachable', 1],
    ['slow', 0],
    ['unknown', 0],
  ] as const) {
    t.equal(metrics.get(`mirrorhook_registry_state{registry="${REGISTRY}",state="${state}"}`), value, `${REGISTRY} ${state}`)
    t.equal(metrics.get(`mirrorhook_registry_state{registry="${MIRROR}",state="${state}"}`), value, `${MIRROR} ${state}`)
  }
  // How many probes ran depends on the machine's speed; that some did, of each kind, does not.
  t.ok((metrics.get(`mirrorhook_registry_probes_total{registry="${REGISTRY}",result="reachable"}`) ?? 0) >= 2, 'two successes to recover')
  t.ok((metrics.get(`mirrorhook_registry_probes_total{registry="${REGISTRY}",result="unreachable"}`) ?? 0) >= 2, 'down twice')
  t.ok((metrics.get(`mirrorhook_registry_probe_duration_seconds_count{registry="${MIRROR}"}`) ?? 0) >= 1, 'mirror probes timed')
  t.ok((metrics.get(`mirrorhook_registry_state_transitions_total{registry="${REGISTRY}",to="reachable"}`) ?? 0) >= 1, 'recovery counted')

  const state = await (await fetch(`${ops}/state`)).json()
  t.equal(state.probesOffline, false, 'one target still answers: probe failures count')
  t.strictSame(
    state.probes.map((p: { registry: string }) => p.registry),
    [MIRROR, REGISTRY, `steady.test:${steadyPort}`],
    'every target scheduled',
  )
  for (const p of state.probes as { registry: string; nextAt: string }[])
    t.equal(new Date(p.nextAt).toISOString(), p.nextAt, `${p.registry} next probe`)

  const r = await runCli(['state', '--url', ops])
  t.equal(r.code, 0, r.stderr)
  const lines = r.stdout.split('\n')
  // Columns are padded to their widest cell, which depends on the ports.
  t.match(lines[0], /^REGISTRY\s+STATE\s+SINCE\s+EXPIRES\s+EVIDENCE$/)
  t.match(
    r.stdout,
    new RegExp(
      `\\n${escape(MIRROR)}\\s+unreachable\\s+\\S+Z \\(\\d+s ago\\)\\s+\\S+Z\\s+probe: connection refused(, \\d+x)?, since \\S+Z\\n`,
    ),
  )
  t.match(r.stdout, new RegExp(`\\nsteady\\.test:${steadyPort}\\s+reachable\\s`))
  t.match(r.stdout, new RegExp(`\\nsource: ${escape(ops)}/state, written \\S+Z by \\S+\\n$`))
  const json = await runCli(['state', '--url', ops, '-o', 'json'])
  t.equal(json.code, 0, json.stderr)
  const parsed = JSON.parse(json.stdout)
  t.equal(parsed.version, 1)
  t.strictSame(
    parsed.registries.map((r: { registry: string }) => r.registry),
    [MIRROR, REGISTRY, `steady.test:${steadyPort}`],
  )
  const closed = await freePort()
  const bad = await runCli(['state', '--url', `http://127.0.0.1:${closed}`])
  t.equal(bad.code, 1)
  t.equal(bad.stderr, `mirrorhook: cannot reach http://127.0.0.1:${closed}/state: ECONNREFUSED\n`)
})
