// Self-managed TLS against a real kube-apiserver: the Secret, the caBundle the
// API server verifies with, and rotations while the API server keeps calling.
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node'
import { pino } from 'pino'
import { startServer, type RunningServer } from '../../server/serve.js'
import { createCa, describeCertificate, issueServing, type KeyPairPem } from '../../server/tls/certs.js'
import type { TlsTimings } from '../../server/tls/plan.js'
import { SelfManagedTls } from '../../server/tls/selfmanaged.js'
import { freePort, type ControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { applyObject, createNamespace, webhookConfigurationFor } from '../support/webhook.js'

// The Secret's keys, written out: kubernetes.io/tls's own, and the CA's.
const SECRET_KEYS = {
  cert: 'tls.crt',
  key: 'tls.key',
  trust: 'ca.crt',
  signerCert: 'signer.crt',
  signerKey: 'signer.key',
  nextSignerCert: 'next-signer.crt',
} as const

const DAY = 86_400_000
const NAMESPACE = 'mirrorhook'
const APPS = 'apps'
const logger = pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' })
// Rewrites everything, learns nothing: these tests are about TLS only.
const CONFIG = {
  mirror: { prefix: 'm.daocloud.io' },
  registries: ['*'],
  mode: 'always',
  reachability: { enabled: false },
  kubeFledged: { enabled: false },
}

const cp = await withControlPlane(t)

function decode(secret: { data?: Record<string, string> }, key: string): string {
  return Buffer.from(secret.data?.[key] ?? '', 'base64').toString('utf8')
}

async function caBundleOf(cp: ControlPlane, name: string): Promise<string> {
  const r = await cp.kubectl(['get', 'mutatingwebhookconfiguration', name, '-o', 'jsonpath={.webhooks[0].clientConfig.caBundle}'])
  if (r.code !== 0) throw new Error(r.stderr)
  return Buffer.from(r.stdout, 'base64').toString('utf8')
}

/** What the server presents, and whether `ca` verifies it for 127.0.0.1 (node:tls, hostname checked). */
function handshake(port: number, ca: string): Promise<{ authorized: boolean; error?: string; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, rejectUnauthorized: false }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256
      resolve({ authorized: socket.authorized, error: socket.authorizationError?.toString(), fingerprint })
      socket.end()
    })
    socket.on('error', reject)
  })
}

const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256

/** True when the API server called the webhook over TLS and got the rewrite back. */
async function apiServerMutates(cp: ControlPlane): Promise<boolean> {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'tls-probe', namespace: APPS },
    spec: { containers: [{ name: 'c', image: 'nginx:1.27' }] },
  }
  const r = await cp.kubectl(['create', '--dry-run=server', '-o', 'json', '-f', '-'], { input: JSON.stringify(pod) })
  return r.code === 0 && JSON.parse(r.stdout).spec.containers[0].image === 'm.daocloud.io/docker.io/library/nginx:1.27'
}

async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

interface Replica {
  server: RunningServer
  dir: string
  stop(): Promise<void>
}

async function startReplica(
  kubeConfig: KubeConfig,
  opts: { secretName: string; webhookConfigName: string; port?: number; timings?: Partial<TlsTimings>; checkIntervalMs?: number },
): Promise<Replica> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-selfmanaged-e2e-'))
  const { writeFile } = await import('node:fs/promises')
  await writeFile(join(dir, 'config.yaml'), JSON.stringify(CONFIG))
  const server = await startServer({
    configPath: join(dir, 'config.yaml'),
    port: opts.port ?? 0,
    host: '127.0.0.1',
    certReloadIntervalMs: 200,
    shutdownDelayMs: 0,
    env: {},
    logger,
    kube: { kubeConfig, source: 'test' },
    selfManagedTls: {
      namespace: NAMESPACE,
      secretName: opts.secretName,
      webhookConfigName: opts.webhookConfigName,
      serviceName: 'mirrorhook',
      certDir: join(dir, 'tls'),
      extraIpAddresses: ['127.0.0.1'],
      timings: opts.timings,
      checkIntervalMs: opts.checkIntervalMs ?? 60_000,
    },
  })
  return {
    server,
    dir,
    stop: async () => {
      await server.close()
      await rm(dir, { recursive: true, force: true })
    },
  }
}

async function registerAt(cp: ControlPlane, name: string, port: number): Promise<void> {
  // No caBundle: the webhook writes it.
  await applyObject(cp, webhookConfigurationFor(`https://127.0.0.1:${port}/mutate`, '', name))
}

async function plantSecret(core: CoreV1Api, name: string, signer: KeyPairPem, serving: KeyPairPem): Promise<void> {
  const b64 = (s: string) => Buffer.from(s).toString('base64')
  await core.createNamespacedSecret({
    namespace: NAMESPACE,
    body: {
      metadata: { name },
      type: 'kubernetes.io/tls',
      data: {
        [SECRET_KEYS.cert]: b64(serving.certPem),
        [SECRET_KEYS.key]: b64(serving.keyPem),
        [SECRET_KEYS.trust]: b64(signer.certPem),
        [SECRET_KEYS.signerCert]: b64(signer.certPem),
        [SECRET_KEYS.signerKey]: b64(signer.keyPem),
      },
    },
  })
}

const SANS = {
  dnsNames: ['mirrorhook.mirrorhook.svc', 'mirrorhook.mirrorhook.svc.cluster.local', 'mirrorhook.mirrorhook', 'mirrorhook'],
  ipAddresses: ['127.0.0.1'],
}

if (cp) {
  const kubeConfig = await cp.kubeConfig()
  const core = kubeConfig.makeApiClient(CoreV1Api)
  await createNamespace(cp, NAMESPACE, false)
  await createNamespace(cp, APPS, true)

  t.test('replicas starting together end with one Secret and a caBundle that verifies every one of them', async (t) => {
    const port = await freePort()
    await registerAt(cp, 'replicas', port)
    const replicas = await Promise.all(
      [0, 1, 2].map((i) =>
        startReplica(kubeConfig, { secretName: 'replicas-tls', webhookConfigName: 'replicas', port: i === 0 ? port : 0 }),
      ),
    )
    t.teardown(() => Promise.all(replicas.map((r) => r.stop())))

    const secret = await core.readNamespacedSecret({ name: 'replicas-tls', namespace: NAMESPACE })
    const created = await Promise.all(
      replicas.map(
        async (r) =>
          (await r.server.metrics.registry.getSingleMetric('mirrorhook_tls_secret_changes_total')?.get())?.values.find(
            (v) => v.labels.change === 'created',
          )?.value ?? 0,
      ),
    )
    t.equal(
      created.reduce((a, b) => a + b, 0),
      1,
      'exactly one replica created the Secret; the others read it',
    )

    const bundle = await caBundleOf(cp, 'replicas')
    t.equal(bundle, decode(secret, SECRET_KEYS.trust), 'the caBundle is the Secret trust bundle')
    for (const [i, r] of replicas.entries()) {
      t.equal(
        await readFile(r.server.selfManagedTls!.files.certFile, 'utf8'),
        decode(secret, SECRET_KEYS.cert),
        `replica ${i} serves the shared certificate`,
      )
      const h = await handshake(r.server.port, bundle)
      t.ok(h.authorized, `replica ${i}: the caBundle verifies its certificate for 127.0.0.1 (${h.error ?? 'ok'})`)
      t.equal(h.fingerprint, fingerprintOf(decode(secret, SECRET_KEYS.cert)))
    }
    await eventually('the API server calls the webhook over TLS', () => apiServerMutates(cp))
    t.pass('the API server verified the webhook with that caBundle')
  })

  t.test('instances racing on the same missing Secret all keep the winner', async (t) => {
    const instances = [0, 1, 2, 3, 4].map(
      (i) =>
        new SelfManagedTls(
          {
            namespace: NAMESPACE,
            secretName: 'race-tls',
            webhookConfigName: 'absent',
            serviceName: 'mirrorhook',
            certDir: join(tmpdir(), `mirrorhook-race-${process.pid}-${i}`),
          },
          { kubeConfig, logger },
        ),
    )
    t.teardown(() => Promise.all(instances.map((i) => rm(i.files.dir, { recursive: true, force: true }))))
    const results = await Promise.all(instances.map((i) => i.ensure()))
    t.equal(results.filter((r) => r.changes.includes('created')).length, 1, 'one creation')
    const secret = await core.readNamespacedSecret({ name: 'race-tls', namespace: NAMESPACE })
    for (const r of results) t.equal(r.state.serving.certPem, decode(secret, SECRET_KEYS.cert))
    t.strictSame(
      results.map((r) => r.caBundleSynced),
      [false, false, false, false, false],
      'no webhook configuration to patch is reported, not fatal',
    )
  })

  for (const [label, serving] of [
    ['soon-expiring', { validDays: 3, issuedDaysAgo: 0 }],
    ['expired', { validDays: 1, issuedDaysAgo: 5 }],
  ] as const) {
    t.test(
      `${label === 'expired' ? 'an' : 'a'} ${label} serving certificate is rotated, and the running server switches to it`,
      async (t) => {
        const name = `rotate-${label}`
        const signer = await createCa('mirrorhook webhook CA', 3650)
        const good = await issueServing(signer, { ...SANS, validDays: 90 })
        await plantSecret(core, `${name}-tls`, signer, good)
        const port = await freePort()
        await registerAt(cp, name, port)
        const replica = await startReplica(kubeConfig, { secretName: `${name}-tls`, webhookConfigName: name, port, checkIntervalMs: 200 })
        t.teardown(() => replica.stop())
        await eventually('the API server calls the webhook', () => apiServerMutates(cp))
        t.equal((await handshake(port, signer.certPem)).fingerprint, fingerprintOf(good.certPem), 'serving the planted certificate')

        // Time passes: the certificate in the Secret is now close to (or past) its end.
        const old = await issueServing(signer, {
          ...SANS,
          validDays: serving.validDays,
          now: new Date(Date.now() - serving.issuedDaysAgo * DAY),
        })
        const secret = await core.readNamespacedSecret({ name: `${name}-tls`, namespace: NAMESPACE })
        secret.data = {
          ...secret.data,
          [SECRET_KEYS.cert]: Buffer.from(old.certPem).toString('base64'),
          [SECRET_KEYS.key]: Buffer.from(old.keyPem).toString('base64'),
        }
        await core.replaceNamespacedSecret({ name: `${name}-tls`, namespace: NAMESPACE, body: secret })

        let presented = ''
        await eventually('the server presents a renewed certificate', async () => {
          presented = (await handshake(port, signer.certPem)).fingerprint
          return presented !== fingerprintOf(good.certPem) && presented !== fingerprintOf(old.certPem)
        })
        const renewed = decode(await core.readNamespacedSecret({ name: `${name}-tls`, namespace: NAMESPACE }), SECRET_KEYS.cert)
        t.equal(presented, fingerprintOf(renewed), 'the renewed certificate is the one in the Secret')
        t.ok(describeCertificate(renewed).notAfter.getTime() > Date.now() + 80 * DAY, 'valid for the full period again')
        t.ok(new X509Certificate(renewed).checkIssued(new X509Certificate(signer.certPem)), 'same CA: no caBundle change needed')
        t.ok((await handshake(port, await caBundleOf(cp, name))).authorized)
        t.ok(await apiServerMutates(cp), 'the API server still calls it')
      },
    )
  }

  t.test('CA rotation: the API server verifies the webhook at every moment', async (t) => {
    const name = 'ca-rotation'
    // A CA with 20 days left, with rotation due 30 days before expiry; promotion 8 s after staging.
    const signer = await createCa('mirrorhook webhook CA', 20)
    const serving = await issueServing(signer, { ...SANS, validDays: 20 })
    await plantSecret(core, `${name}-tls`, signer, serving)
    const port = await freePort()
    await registerAt(cp, name, port)
    const timings = { caRenewBeforeDays: 30, caPromotionDelayMs: 8_000 }
    const replica = await startReplica(kubeConfig, {
      secretName: `${name}-tls`,
      webhookConfigName: name,
      port,
      timings,
      checkIntervalMs: 250,
    })
    t.teardown(() => replica.stop())

    const secret = await core.readNamespacedSecret({ name: `${name}-tls`, namespace: NAMESPACE })
    const nextCa = decode(secret, SECRET_KEYS.nextSignerCert)
    t.match(
      nextCa,
      /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----\n?$/,
      'next CA staged at start: one PEM certificate',
    )
    t.equal((await caBundleOf(cp, name)).match(/BEGIN CERTIFICATE/g)?.length, 2, 'caBundle carries the old and the next CA')

    // Sample through the promotion, however long the machine takes to get there, and a few
    // times after it: the bundle in the API must verify what the server presents, and the
    // API server's own call must go through.
    const seen: string[] = []
    const deadline = Date.now() + 120_000
    let samples = 0
    let afterPromotion = 0
    while (afterPromotion < 5) {
      if (Date.now() > deadline) throw new Error(`no certificate from the promoted CA served within 120 s (seen: ${seen.join(', ')})`)
      const bundle = await caBundleOf(cp, name)
      const h = await handshake(port, bundle)
      t.ok(h.authorized, `sample ${samples}: caBundle verifies the presented certificate`, { error: h.error })
      t.ok(await apiServerMutates(cp), `sample ${samples}: the API server's call went through`)
      const presented = h.fingerprint === fingerprintOf(serving.certPem) ? 'old-ca' : 'next-ca'
      if (seen.at(-1) !== presented) seen.push(presented)
      if (presented === 'next-ca') afterPromotion++
      samples++
    }
    t.strictSame(seen, ['old-ca', 'next-ca'], 'served the old CA certificate, then one from the promoted CA, never back')
    const after = await core.readNamespacedSecret({ name: `${name}-tls`, namespace: NAMESPACE })
    t.equal(decode(after, SECRET_KEYS.signerCert), nextCa, 'the staged CA was promoted')
    t.equal(after.data?.[SECRET_KEYS.nextSignerCert], undefined, 'nothing staged any more')
    t.ok(new X509Certificate(decode(after, SECRET_KEYS.cert)).checkIssued(new X509Certificate(nextCa)))
    t.equal(decode(after, SECRET_KEYS.trust).match(/BEGIN CERTIFICATE/g)?.length, 2, 'the old CA stays trusted until it expires')
  })

  t.test('a caBundle reset by someone else is written back', async (t) => {
    const port = await freePort()
    await registerAt(cp, 'reset', port)
    const replica = await startReplica(kubeConfig, { secretName: 'reset-tls', webhookConfigName: 'reset', port })
    t.teardown(() => replica.stop())
    const bundle = await caBundleOf(cp, 'reset')
    const secret = await core.readNamespacedSecret({ name: 'reset-tls', namespace: NAMESPACE })
    t.equal(bundle, decode(secret, SECRET_KEYS.trust), 'the caBundle is the Secret trust bundle')
    await registerAt(cp, 'reset', port) // re-applies the file: caBundle empty again
    t.equal(await caBundleOf(cp, 'reset'), '', 'reset')
    const pass = await replica.server.selfManagedTls!.reconcile()
    t.equal(pass.caBundleSynced, true)
    t.same(pass.changes, [], 'the Secret itself is untouched')
    t.equal(await caBundleOf(cp, 'reset'), bundle, 'restored by the next pass')
  })
}
