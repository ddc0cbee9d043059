// A real OCI registry for the tests: the CNCF distribution registry (v3, built by
// test/k8s/build.sh) over TLS on 127.0.0.1, usable as the mirror (images pushed under
// `<host>/docker.io/library/nginx:1.25`, the mirror's layout) and as an internal registry.
//
//   const reg = await startRegistry({ dir })
//   await pushImage(reg, 'docker.io/library/nginx', '1.25')   // a tiny synthetic image
//   await reg.stop()
//
// With `auth: { token: ... }` it asks clients for a token from a realm (test/support/token-issuer.ts),
// as distribution's `auth: token` does; the push helpers then authorise with `pushAuthorization`.
// `pushImage(..., { created })`, `tagManifest` (many tags of one manifest, one PUT each) and
// `pushIndex` (a multi-arch index) build the tag sets the pre-warm tests need.
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { gzipSync } from 'node:zlib'
import { stringify as toYaml } from 'yaml'
import { createCa, issueServing, type KeyPairPem } from '../../server/tls/certs.js'
import { defaultBinDir, freePort, httpRequest, spawnLogged, stopSpawned, tail, waitFor, type Spawned } from './controlplane.js'

export interface RegistryOptions {
  binDir?: string
  /** Where storage, config, certificates and the log go (default: a new temp dir, removed by stop()). */
  dir?: string
  port?: number
  /** Where registry.log goes (default: dir). */
  logsDir?: string
  detach?: boolean
  /** The CA that signs its serving certificate (default: a new one); share it with other test servers. */
  ca?: KeyPairPem
  /** distribution's `auth:` section (docs/content/about/configuration.md#auth); default none. */
  auth?: { token: { realm: string; service: string; issuer: string; rootCertBundle: string } }
  /** The Authorization header the push helpers send for a repository (with `auth`). */
  pushAuthorization?: (repository: string) => string
}

export interface Registry {
  /** 127.0.0.1:<port>, as it appears in an image reference. */
  host: string
  /** https://127.0.0.1:<port> */
  url: string
  /** PEM of the CA that signed its certificate (give it to probes: reachability.probes.caFile). */
  caPem: string
  caFile: string
  /** The CA's certificate and key, to issue certificates for other loopback test servers. */
  ca: KeyPairPem
  pushAuthorization?: (repository: string) => string
  dir: string
  logFile: string
  pid: number
  logTail(lines?: number): string
  stop(): Promise<void>
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<Registry> {
  const binDir = opts.binDir ?? defaultBinDir()
  const ownDir = !opts.dir
  const dir = opts.dir ?? mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-registry-'))
  mkdirSync(path.join(dir, 'storage'), { recursive: true })
  const port = opts.port ?? (await freePort())
  const ca = opts.ca ?? (await createCa('mirrorhook-e2e-registry-ca', 7))
  const serving = await issueServing(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], validDays: 7 })
  const caFile = path.join(dir, 'ca.crt')
  // A PEM file ends with a newline (x509's toString('pem') leaves it off): tools that append
  // one bundle to another, or read line by line, need it.
  const pem = (text: string) => (text.endsWith('\n') ? text : `${text}\n`)
  writeFileSync(caFile, pem(ca.certPem))
  writeFileSync(path.join(dir, 'tls.crt'), pem(serving.certPem))
  writeFileSync(path.join(dir, 'tls.key'), pem(serving.keyPem), { mode: 0o600 })
  // distribution's configuration (docs/content/about/configuration.md): filesystem storage,
  // deletes allowed (purges), TLS on loopback, no auth.
  const config = {
    version: 0.1,
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: path.join(dir, 'storage') }, delete: { enabled: true }, cache: { blobdescriptor: 'inmemory' } },
    http: {
      addr: `127.0.0.1:${port}`,
      tls: { certificate: path.join(dir, 'tls.crt'), key: path.join(dir, 'tls.key') },
      headers: { 'X-Content-Type-Options': ['nosniff'] },
      draintimeout: '1s',
    },
    health: { storagedriver: { enabled: true, interval: '10s', threshold: 3 } },
    ...(opts.auth
      ? {
          auth: {
            token: {
              realm: opts.auth.token.realm,
              service: opts.auth.token.service,
              issuer: opts.auth.token.issuer,
              rootcertbundle: opts.auth.token.rootCertBundle,
            },
          },
        }
      : {}),
  }
  const configFile = path.join(dir, 'config.yml')
  writeFileSync(configFile, toYaml(config))
  const logFile = path.join(opts.logsDir ?? dir, 'registry.log')
  const url = `https://127.0.0.1:${port}`
  const proc: Spawned = spawnLogged(path.join(binDir, 'registry'), ['serve', configFile], logFile, opts.detach ?? false, {
    OTEL_TRACES_EXPORTER: 'none',
  })
  const stop = async () => {
    await stopSpawned(proc)
    if (ownDir) rmSync(dir, { recursive: true, force: true })
  }
  try {
    await waitFor(
      `registry at ${url}`,
      30_000,
      // 401 with auth configured: it answers, asking for a token.
      async () => [200, 401].includes((await httpRequest(`${url}/v2/`, { ca: ca.certPem, timeoutMs: 2_000 })).status),
      () => (proc.exitInfo ? `registry exited (code ${proc.exitInfo.code}); last lines of ${logFile}:\n${tail(logFile)}` : null),
    )
  } catch (e) {
    await stop().catch(() => {})
    throw e
  }
  return {
    host: `127.0.0.1:${port}`,
    url,
    caPem: ca.certPem,
    caFile,
    ca,
    pushAuthorization: opts.pushAuthorization,
    dir,
    logFile,
    pid: proc.child.pid!,
    logTail: (lines = 40) => tail(logFile, lines),
    stop,
  }
}

// ---------------------------------------------------------------------------------------------
// Pushing a synthetic image through the OCI distribution API (distribution-spec v1.1:
// "Pushing blobs" POST then PUT, "Pushing Manifests" PUT), no docker needed.

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`

/** A ustar archive holding one regular file (POSIX ustar header, 512-byte blocks, two zero blocks at the end). */
export function tarOneFile(name: string, content: Buffer): Buffer {
  const header = Buffer.alloc(512)
  const put = (s: string, off: number, len: number) => header.write(s.slice(0, len), off, len, 'utf8')
  const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, '0') + '\0'
  put(name, 0, 100)
  put(octal(0o644, 8), 100, 8)
  put(octal(0, 8), 108, 8)
  put(octal(0, 8), 116, 8)
  put(octal(content.length, 12), 124, 12)
  put(octal(0, 12), 136, 12) // mtime 1970: reproducible digests
  header.fill(' ', 148, 156)
  put('0', 156, 1)
  put('ustar\0', 257, 6)
  put('00', 263, 2)
  let sum = 0
  for (const b of header) sum += b
  put(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8)
  const pad = Buffer.alloc((512 - (content.length % 512)) % 512)
  return Buffer.concat([header, content, pad, Buffer.alloc(1024)])
}

export interface PushedImage {
  /** <host>/<repository>:<tag> */
  reference: string
  /** <host>/<repository>@<manifest digest> */
  byDigest: string
  digest: string
  size: number
  /** The manifest as pushed (PUT it under more tags with tagManifest). */
  manifest: Buffer
  mediaType: string
}

/** Where a registry is and how the push helpers authorise (Registry satisfies it). */
export interface PushTarget {
  host: string
  url: string
  caPem: string
  pushAuthorization?: (repository: string) => string
}

function authHeaders(reg: PushTarget, repository: string): Record<string, string> {
  return reg.pushAuthorization ? { Authorization: reg.pushAuthorization(repository) } : {}
}

async function pushBlob(reg: PushTarget, repository: string, blob: Buffer): Promise<string> {
  const digest = sha256(blob)
  const auth = authHeaders(reg, repository)
  const head = await httpRequest(`${reg.url}/v2/${repository}/blobs/${digest}`, { method: 'HEAD', ca: reg.caPem, headers: auth })
  if (head.status === 200) return digest
  const start = await httpRequestWithHeaders(`${reg.url}/v2/${repository}/blobs/uploads/`, 'POST', reg.caPem, auth)
  if (start.status !== 202 || !start.location) throw new Error(`blob upload start for ${repository}: HTTP ${start.status} ${start.body}`)
  const loc = new URL(start.location, reg.url)
  loc.searchParams.set('digest', digest)
  const put = await httpRequest(loc.toString(), {
    method: 'PUT',
    ca: reg.caPem,
    body: blob,
    headers: { ...auth, 'Content-Type': 'application/octet-stream', 'Content-Length': String(blob.length) },
  })
  if (put.status !== 201) throw new Error(`blob upload of ${digest} to ${repository}: HTTP ${put.status} ${put.body}`)
  return digest
}

async function httpRequestWithHeaders(
  url: string,
  method: string,
  ca: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; location?: string }> {
  const https = await import('node:https')
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, ca, agent: false, timeout: 10_000, headers: { ...headers, 'Content-Length': '0' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, location: res.headers.location }))
    })
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)))
    req.on('error', reject)
    req.end()
  })
}

export interface ImageOptions {
  /** The image config's `created` (RFC 3339), e.g. '1970-01-01T00:00:00Z' as a reproducible build writes it; absent by default. */
  created?: string
  /** Manifest annotations, e.g. { 'org.opencontainers.image.created': '2026-01-02T03:04:05Z' }. */
  annotations?: Record<string, string>
  os?: string
  architecture?: string
  variant?: string
}

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json'

/** Pushes the blobs of a tiny one-layer image and returns its manifest (not yet PUT). */
async function buildImage(reg: PushTarget, repository: string, content: string, opts: ImageOptions): Promise<Buffer> {
  const file = Buffer.from(content)
  const tar = tarOneFile('hello.txt', file)
  const layer = gzipSync(tar, { level: 9 })
  const config = Buffer.from(
    JSON.stringify({
      ...(opts.created !== undefined ? { created: opts.created } : {}),
      architecture: opts.architecture ?? 'amd64',
      os: opts.os ?? 'linux',
      ...(opts.variant !== undefined ? { variant: opts.variant } : {}),
      config: { Cmd: ['/hello.txt'] },
      rootfs: { type: 'layers', diff_ids: [sha256(tar)] },
      history: [{ created_by: 'mirrorhook test/support/registry.ts' }],
    }),
  )
  const configDigest = await pushBlob(reg, repository, config)
  const layerDigest = await pushBlob(reg, repository, layer)
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
      ...(opts.annotations ? { annotations: opts.annotations } : {}),
    }),
  )
}

async function putManifest(
  reg: PushTarget,
  repository: string,
  reference: string,
  manifest: Buffer,
  mediaType: string,
): Promise<PushedImage> {
  const put = await httpRequest(`${reg.url}/v2/${repository}/manifests/${reference}`, {
    method: 'PUT',
    ca: reg.caPem,
    body: manifest,
    headers: { ...authHeaders(reg, repository), 'Content-Type': mediaType, 'Content-Length': String(manifest.length) },
  })
  if (put.status !== 201) throw new Error(`manifest ${repository}:${reference}: HTTP ${put.status} ${put.body}`)
  const digest = sha256(manifest)
  const sep = reference.startsWith('sha256:') ? '@' : ':'
  return {
    reference: `${reg.host}/${repository}${sep}${reference}`,
    byDigest: `${reg.host}/${repository}@${digest}`,
    digest,
    size: manifest.length,
    manifest,
    mediaType,
  }
}

/**
 * Pushes a tiny OCI image (one layer holding one file; linux/amd64 unless told) as `<repository>:<tag>`.
 * `content` makes images differ (default: the reference itself); `opts.created` sets the build time.
 */
export async function pushImage(
  reg: PushTarget,
  repository: string,
  tag: string,
  content?: string,
  opts: ImageOptions = {},
): Promise<PushedImage> {
  const manifest = await buildImage(reg, repository, content ?? `${repository}:${tag}\n`, opts)
  return putManifest(reg, repository, tag, manifest, OCI_MANIFEST)
}

/** Puts an already pushed manifest under more tags: one PUT per tag, no blobs. */
export async function tagManifest(
  reg: PushTarget,
  repository: string,
  image: PushedImage,
  tags: readonly string[],
  concurrency = 8,
): Promise<void> {
  const queue = [...tags]
  await Promise.all(
    Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
      for (let tag = queue.shift(); tag !== undefined; tag = queue.shift())
        await putManifest(reg, repository, tag, image.manifest, image.mediaType)
    }),
  )
}

/**
 * Pushes a multi-arch OCI index as `<repository>:<tag>`: one tiny image per platform
 * (`os/arch[/variant]` with its own `created`), pushed by digest, then the index.
 */
export async function pushIndex(
  reg: PushTarget,
  repository: string,
  tag: string,
  platforms: readonly { platform: string; created?: string; annotations?: Record<string, string> }[],
  annotations?: Record<string, string>,
): Promise<PushedImage> {
  const manifests = []
  for (const p of platforms) {
    const [os, architecture, variant] = p.platform.split('/')
    const manifest = await buildImage(reg, repository, `${repository}:${tag} ${p.platform}\n`, {
      os,
      architecture,
      variant,
      created: p.created,
      annotations: p.annotations,
    })
    const pushed = await putManifest(reg, repository, sha256(manifest), manifest, OCI_MANIFEST)
    manifests.push({
      mediaType: OCI_MANIFEST,
      digest: pushed.digest,
      size: pushed.size,
      platform: { os, architecture, ...(variant ? { variant } : {}) },
    })
  }
  const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests, ...(annotations ? { annotations } : {}) }))
  return putManifest(reg, repository, tag, index, OCI_INDEX)
}

/** HEAD of a manifest: 200 when `<repository>:<reference>` is in the registry. */
export async function hasManifest(reg: PushTarget, repository: string, reference: string): Promise<boolean> {
  const r = await httpRequest(`${reg.url}/v2/${repository}/manifests/${reference}`, {
    method: 'HEAD',
    ca: reg.caPem,
    headers: {
      ...authHeaders(reg, repository),
      Accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json',
    },
  })
  return r.status === 200
}
