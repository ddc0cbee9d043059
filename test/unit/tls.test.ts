// Real TLS on loopback: the server keeps answering while its certificate files rotate.
import t from 'tap'
import { request as httpsRequest, Agent } from 'node:https'
import { connect, type PeerCertificate } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { once } from 'node:events'
import { mkdtemp, rename, rm, writeFile, readFile, symlink, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { createCa, issueServing } from '../../server/tls/certs.js'
import { startServer, type RunningServer } from '../../server/serve.js'
import { until } from '../support/helpers.js'

const review = JSON.stringify({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: 'tls-1',
    namespace: 'shop',
    operation: 'CREATE',
    object: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'nginx' }] } },
  },
})

// Mode always (a configuration file's default) with no registry state: admission answers
// the same whatever the timing, and nothing probes a registry off this machine.
const configDir = await mkdtemp(join(tmpdir(), 'mirrorhook-tls-config-'))
t.teardown(() => rm(configDir, { recursive: true, force: true }))
const configPath = join(configDir, 'config.yaml')
await writeFile(configPath, 'reachability:\n  enabled: false\n')

// The answer to `review` under mode always with the embedded mirror (m.daocloud.io for Docker Hub).
const rewritten = {
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  response: {
    uid: 'tls-1',
    allowed: true,
    patchType: 'JSONPatch',
    patch: Buffer.from(
      JSON.stringify([
        { op: 'replace', path: '/spec/containers/0/image', value: 'm.daocloud.io/docker.io/library/nginx' },
        { op: 'add', path: '/metadata/annotations', value: { 'mirrorhook.io/original-images': '{"c":"nginx"}' } },
      ]),
    ).toString('base64'),
    warnings: ['mirrorhook: c: nginx -> m.daocloud.io/docker.io/library/nginx (mode always)'],
  },
}

interface Answer {
  status: number
  body: string
  fingerprint: string
  reused: boolean
}

function post(port: number, ca: string, agent?: Agent): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        ca,
        agent: agent ?? false,
        headers: { 'content-type': 'application/json' },
      },
      (res) => {
        const socket = res.socket as import('node:tls').TLSSocket
        const cert = socket.getPeerCertificate() as PeerCertificate
        const reused = socket.isSessionReused() || req.reusedSocket
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, fingerprint: cert.fingerprint256, reused }))
      },
    )
    req.on('error', reject)
    req.end(review)
  })
}

async function issue(dir: string, name: string) {
  const ca = await createCa(`test CA ${name}`, 30)
  const serving = await issueServing(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], validDays: 30 })
  await writeFile(join(dir, `${name}.crt`), serving.certPem)
  await writeFile(join(dir, `${name}.key`), serving.keyPem)
  return { ca: ca.certPem, ...serving }
}

t.test('certificate files rotated mid-run: answers continue, new connections get the new certificate', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-tls-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const first = await issue(dir, 'first')
  // A kubelet Secret volume: files reached through a `..data` symlink that is swapped atomically.
  await mkdir(join(dir, 'v1'))
  await writeFile(join(dir, 'v1', 'tls.crt'), first.certPem)
  await writeFile(join(dir, 'v1', 'tls.key'), first.keyPem)
  await symlink('v1', join(dir, '..data'))
  await symlink(join('..data', 'tls.crt'), join(dir, 'tls.crt'))
  await symlink(join('..data', 'tls.key'), join(dir, 'tls.key'))

  const server: RunningServer = await startServer({
    configPath,
    port: 0,
    host: '127.0.0.1',
    tlsCertFile: join(dir, 'tls.crt'),
    tlsKeyFile: join(dir, 'tls.key'),
    certReloadIntervalMs: 200,
    shutdownDelayMs: 0,
    env: {},
    logger: pino({ level: 'silent' }),
    kube: null,
  })
  t.teardown(() => server.close())

  const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => keepAlive.destroy())
  const before = await post(server.port, first.ca, keepAlive)
  t.equal(before.status, 200)
  t.strictSame(JSON.parse(before.body), rewritten, 'the review is answered in full')

  // Traffic during the rotation: every request must be answered.
  let stop = false
  // Ends the traffic loop even when an assertion below throws, so the file cannot hang.
  t.teardown(() => {
    stop = true
  })
  const failures: unknown[] = []
  let answered = 0
  const second = await issue(dir, 'second')
  const third = await issue(dir, 'third')
  const trustAll = `${first.ca}\n${second.ca}\n${third.ca}`
  const traffic = (async () => {
    while (!stop) {
      try {
        const a = await post(server.port, trustAll)
        if (a.status === 200) answered++
        else failures.push(a.status)
      } catch (error) {
        failures.push(error)
      }
    }
  })()

  await mkdir(join(dir, 'v2'))
  await writeFile(join(dir, 'v2', 'tls.crt'), second.certPem)
  await writeFile(join(dir, 'v2', 'tls.key'), second.keyPem)
  await symlink('v2', join(dir, '..data_tmp'))
  await rename(join(dir, '..data_tmp'), join(dir, '..data'))

  const after = await until('the new certificate', async () => {
    const a = await post(server.port, trustAll)
    return a.fingerprint !== before.fingerprint ? a : undefined
  })
  t.equal(after.status, 200, 'a new connection is served with the new certificate')
  t.strictSame(JSON.parse(after.body), rewritten)
  const newOnly = await post(server.port, second.ca)
  t.equal(newOnly.status, 200, 'the new certificate verifies against the new CA alone')

  const stillOpen = await post(server.port, first.ca, keepAlive)
  t.equal(stillOpen.status, 200, 'a connection opened before the rotation keeps working')
  t.equal(stillOpen.reused, true, 'on the same socket')
  t.equal(stillOpen.fingerprint, before.fingerprint, 'with the certificate it was opened with')

  // A plain overwrite (no symlinks) is picked up too, and a half-written pair is not. writeFile
  // truncates before it writes, so checks also see an empty certificate file: never a pair either.
  const reloadsCounted = async (result: 'success' | 'error') =>
    (await server.metrics.certReloads.get()).values.find((v) => v.labels.result === result)?.value ?? 0
  await rm(join(dir, 'tls.crt'))
  await writeFile(join(dir, 'tls.crt'), third.certPem)
  // Checks run one at a time: two more rejections mean one began after the new certificate was written.
  const rejected = await reloadsCounted('error')
  await until('the half-written pair to be checked and rejected', async () =>
    (await reloadsCounted('error')) >= rejected + 2 ? true : undefined,
  )
  t.equal(await reloadsCounted('success'), 1, 'no reload since the first rotation')
  t.equal((await post(server.port, trustAll)).fingerprint, after.fingerprint, 'a certificate without its key is not used')
  await rm(join(dir, 'tls.key'))
  await writeFile(join(dir, 'tls.key'), third.keyPem)
  const thirdAnswer = await until('the overwritten pair', async () => {
    const a = await post(server.port, third.ca).catch(() => undefined)
    return a?.status === 200 ? a : undefined
  })
  t.equal(thirdAnswer.status, 200, 'overwritten files are picked up once they match')

  stop = true
  await traffic
  t.same(failures, [], 'no request failed during the rotations')
  t.ok(answered > 0, `answered ${answered} requests during the rotations`)
  t.equal(await reloadsCounted('success'), 2, 'two reloads counted')
  t.equal(await readFile(join(dir, 'tls.crt'), 'utf8'), third.certPem)
})

t.test('TLS below 1.2 is refused', async (t) => {
  const server = await startServer({
    configPath,
    port: 0,
    host: '127.0.0.1',
    devCertDir: await mkdtemp(join(tmpdir(), 'mirrorhook-dev-')),
    certReloadIntervalMs: 60_000,
    shutdownDelayMs: 0,
    env: {},
    logger: pino({ level: 'silent' }),
    kube: null,
  })
  t.teardown(() => server.close())
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: server.port, minVersion: 'TLSv1', maxVersion: 'TLSv1.1', rejectUnauthorized: false })
    socket.on('secureConnect', () => {
      socket.destroy()
      resolve('connected')
    })
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
  })
  t.equal(outcome, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'the server answers with a protocol_version alert')
  const modern = await new Promise<string | null>((resolve) => {
    const socket = connect({
      host: '127.0.0.1',
      port: server.port,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      rejectUnauthorized: false,
    })
    socket.on('secureConnect', () => {
      resolve(socket.getProtocol())
      socket.destroy()
    })
    socket.on('error', () => resolve(null))
  })
  t.equal(modern, 'TLSv1.2')
})

t.test('development certificates: generated once, valid for localhost and 127.0.0.1, reused', async (t) => {
  const devCertDir = await mkdtemp(join(tmpdir(), 'mirrorhook-dev-'))
  t.teardown(() => rm(devCertDir, { recursive: true, force: true }))
  const options = {
    configPath,
    port: 0,
    host: '127.0.0.1',
    devCertDir,
    certReloadIntervalMs: 60_000,
    shutdownDelayMs: 0,
    env: {},
    logger: pino({ level: 'silent' }),
    kube: null,
  }
  const server = await startServer(options)
  t.equal(server.caFile, join(devCertDir, 'ca.crt'))
  const ca = await readFile(server.caFile!, 'utf8')
  t.equal((await post(server.port, ca)).status, 200, 'the CA verifies the serving certificate for 127.0.0.1')
  const cert = await readFile(join(devCertDir, 'tls.crt'), 'utf8')
  await server.close()
  const again = await startServer(options)
  t.teardown(() => again.close())
  t.equal(await readFile(join(devCertDir, 'tls.crt'), 'utf8'), cert, 'still valid, so reused')
})

t.test('graceful shutdown: not ready first, in-flight reviews answered', async (t) => {
  const server = await startServer({
    configPath,
    port: 0,
    host: '127.0.0.1',
    metricsPort: 0,
    devCertDir: await mkdtemp(join(tmpdir(), 'mirrorhook-dev-')),
    certReloadIntervalMs: 60_000,
    shutdownDelayMs: 500,
    env: {},
    logger: pino({ level: 'silent' }),
    kube: null,
  })
  const ca = await readFile(server.caFile!, 'utf8')
  // A review whose body is still arriving when shutdown begins, and still when the listener has closed.
  const arrived = once(server.webhook.server, 'request')
  const req = httpsRequest({
    host: '127.0.0.1',
    port: server.port,
    path: '/mutate',
    method: 'POST',
    ca,
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(review) },
  })
  const inFlight = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on('response', (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
  })
  req.write(review.slice(0, 20))
  await arrived
  const closing = server.close()
  const ready = await fetch(`http://127.0.0.1:${server.metricsPort}/readyz`)
  t.equal(ready.status, 503, 'not ready while draining')
  await until('the listener to refuse new connections', () => tcpRefused(server.port), 30_000)
  req.end(review.slice(20))
  const answer = await inFlight
  t.equal(answer.status, 200, 'the in-flight review is answered')
  t.strictSame(JSON.parse(answer.body), rewritten, 'in full')
  await closing
  await t.rejects(post(server.port, ca), { code: 'ECONNREFUSED' }, 'closed afterwards')
})

// True once nothing listens on `port` any more (the connection is refused), else undefined.
function tcpRefused(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = netConnect({ host: '127.0.0.1', port })
    socket.on('connect', () => {
      socket.destroy()
      resolve(undefined)
    })
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED' ? true : undefined))
  })
}

// What one TLS 1.2 client offering only `cipher` gets from the server: the suite, or the error.
function handshake12(port: number, cipher: string): Promise<{ cipher?: string; error?: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, maxVersion: 'TLSv1.2', ciphers: cipher, rejectUnauthorized: false })
    socket.on('secureConnect', () => {
      resolve({ cipher: socket.getCipher().name })
      socket.destroy()
    })
    socket.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
  })
}

// A self-signed RSA serving certificate, so the RSA key-exchange suites can be offered too.
async function rsaServing(dir: string): Promise<{ tlsCertFile: string; tlsKeyFile: string }> {
  const x509 = await import('@peculiar/x509')
  const { webcrypto } = await import('node:crypto')
  const alg = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 }
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=localhost',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    keys,
    signingAlgorithm: alg,
  })
  const key = x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY')
  await writeFile(join(dir, 'rsa.crt'), cert.toString('pem'))
  await writeFile(join(dir, 'rsa.key'), key)
  return { tlsCertFile: join(dir, 'rsa.crt'), tlsKeyFile: join(dir, 'rsa.key') }
}

t.test('TLS 1.2 offers only AEAD suites with forward secrecy; TLS 1.3 is untouched', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-tls-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const base = { configPath, port: 0, host: '127.0.0.1', certReloadIntervalMs: 60_000, shutdownDelayMs: 0, env: {}, kube: null }
  const ecdsa = await startServer({ ...base, devCertDir: dir, logger: pino({ level: 'silent' }) })
  t.teardown(() => ecdsa.close())
  for (const cbc of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA384']) {
    t.same(await handshake12(ecdsa.port, cbc), { error: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' }, `ECDSA certificate: ${cbc} refused`)
  }
  t.same(await handshake12(ecdsa.port, 'ECDHE-ECDSA-AES128-GCM-SHA256'), { cipher: 'ECDHE-ECDSA-AES128-GCM-SHA256' })
  t.same(await handshake12(ecdsa.port, 'ECDHE-ECDSA-CHACHA20-POLY1305'), { cipher: 'ECDHE-ECDSA-CHACHA20-POLY1305' })

  const rsa = await startServer({ ...base, ...(await rsaServing(dir)), logger: pino({ level: 'silent' }) })
  t.teardown(() => rsa.close())
  for (const weak of ['ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA', 'AES128-GCM-SHA256', 'AES128-SHA', 'DHE-RSA-AES128-GCM-SHA256']) {
    t.same(await handshake12(rsa.port, weak), { error: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' }, `RSA certificate: ${weak} refused`)
  }
  t.same(await handshake12(rsa.port, 'ECDHE-RSA-AES256-GCM-SHA384'), { cipher: 'ECDHE-RSA-AES256-GCM-SHA384' })

  const tls13 = await new Promise<{ protocol: string | null; cipher: string }>((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: ecdsa.port, rejectUnauthorized: false })
    socket.on('secureConnect', () => {
      resolve({ protocol: socket.getProtocol(), cipher: socket.getCipher().name })
      socket.destroy()
    })
    socket.on('error', reject)
  })
  t.same(tls13, { protocol: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384' }, 'a default client still gets TLS 1.3')
})
