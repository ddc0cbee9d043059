// A real Kubernetes control plane for the end-to-end tests: etcd + kube-apiserver
// (envtest-style: no controller-manager, no scheduler, no kubelet, no nodes).
//
//   const cp = await startControlPlane();
//   await cp.kubectl(['get', 'ns']);
//   await cp.stop();
//
// Binaries come from test/k8s/build.sh (`npm run k8s:build`): $MIRRORHOOK_K8S_BIN or
// ~/.cache/mirrorhook/k8s/<kubernetes version>/.
import { spawn, type ChildProcess } from 'node:child_process'
import { generateKeyPair, randomBytes, type KeyPairKeyObjectResult } from 'node:crypto'
import { existsSync, openSync, closeSync, readFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs'
import https from 'node:https'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify as toYaml } from 'yaml'
import { createCa, issueServing } from '../../server/tls/certs.js'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = path.resolve(HERE, '..', '..')
const GO_MOD = path.join(REPO_ROOT, 'test', 'k8s', 'go.mod')

function goModVersion(mod: string): string {
  const text = readFileSync(GO_MOD, 'utf8')
  const m = new RegExp(`^\\s*${mod.replace(/[.]/g, '\\.')}\\s+(v\\S+)`, 'm').exec(text)
  if (!m?.[1]) throw new Error(`cannot find ${mod} in ${GO_MOD}`)
  return m[1]
}

/** The Kubernetes version the tests run against, e.g. "v1.35.8" (from test/k8s/go.mod). */
export const K8S_VERSION = goModVersion('k8s.io/kubernetes')
/** The etcd version, e.g. "v3.6.5" (from test/k8s/go.mod). */
export const ETCD_VERSION = goModVersion('go.etcd.io/etcd/server/v3')

export const BINARIES = ['etcd', 'kube-apiserver', 'kubectl', 'helm'] as const
/** What a whole test cluster needs on top of BINARIES (test/support/cluster.ts). */
export const CLUSTER_BINARIES = [...BINARIES, 'kube-controller-manager', 'kube-scheduler', 'kwok', 'registry'] as const

/** Where the binaries are expected: $MIRRORHOOK_K8S_BIN, else the per-version cache directory. */
export function defaultBinDir(): string {
  if (process.env.MIRRORHOOK_K8S_BIN) return path.resolve(process.env.MIRRORHOOK_K8S_BIN)
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache')
  return path.join(cache, 'mirrorhook', 'k8s', K8S_VERSION)
}

export interface BinaryCheck {
  binDir: string
  ok: boolean
  /** Binaries that are absent or incomplete (no stamp file from build.sh). */
  missing: string[]
  /** Human-readable explanation with what to run, when !ok. */
  message: string
}

/** Checks that build.sh finished for every binary (a partial build never counts). */
export function checkBinaries(binDir = defaultBinDir(), names: readonly string[] = BINARIES): BinaryCheck {
  const missing = names.filter((b) => {
    try {
      return !(statSync(path.join(binDir, b)).mode & 0o111) || !existsSync(path.join(binDir, `.${b}.stamp`))
    } catch {
      return true
    }
  })
  const ok = missing.length === 0
  const message = ok
    ? `control-plane binaries in ${binDir}`
    : `control-plane binaries missing in ${binDir} (${missing.join(', ')}): run \`npm run k8s:build\` ` +
      `(builds kube-apiserver ${K8S_VERSION} and etcd ${ETCD_VERSION} with Go >= 1.25, ~10 min cold; ` +
      `kube-controller-manager, kube-scheduler, kwok and the registry need Go >= 1.26, ~12 min more; ` +
      `set MIRRORHOOK_K8S_BIN to use another directory)`
  return { binDir, ok, missing: [...missing], message }
}

export interface ExecResult {
  code: number
  stdout: string
  stderr: string
}

export interface ExecOptions {
  /** Written to stdin (e.g. a manifest for `kubectl apply -f -`). */
  input?: string
  /** Extra environment variables. */
  env?: NodeJS.ProcessEnv
  /** Kill after this many ms (default 60 000); code is then 124. */
  timeoutMs?: number
  cwd?: string
}

export interface StartOptions {
  /** Directory holding etcd, kube-apiserver, kubectl, helm (default: defaultBinDir()). */
  binDir?: string
  /**
   * Directory for everything (etcd data, pki, logs, kubeconfig). Default: a new temp dir,
   * removed by stop() unless logs are kept. A given dir is never removed as a whole.
   */
  workDir?: string
  /** Where to write the kubeconfig (default <workDir>/kubeconfig). */
  kubeconfigPath?: string
  /** How long to wait for /readyz (default 90 s). */
  readyTimeoutMs?: number
  /** Extra kube-apiserver flags, e.g. ['--v=4'] or ['--feature-gates=...']. */
  apiserverArgs?: string[]
  /**
   * Keep running after this Node process exits (cluster:up). Default false: the children are
   * killed on stop(), on process exit and on SIGINT/SIGTERM/SIGHUP, and a watchdog kills them
   * if this process dies without running its handlers (SIGKILL).
   */
  detach?: boolean
  /** Wait until namespace "default" exists (default true). */
  waitForDefaultNamespace?: boolean
}

export interface StopOptions {
  /** Keep the logs (and pki/kubeconfig) and print where they are. Default false. */
  keepLogs?: boolean
  /** Why the logs are kept, for the printed line. */
  reason?: string
}

export interface ControlPlane {
  /** https://127.0.0.1:<port> */
  server: string
  port: number
  etcdUrl: string
  /** kubeconfig with the embedded CA and the admin token (current-context "mirrorhook-e2e"). */
  kubeconfigPath: string
  /** PEM of the CA that signed the apiserver's serving certificate. */
  caPem: string
  /** Bearer token of user "admin" in group system:masters. */
  adminToken: string
  /** Bearer token of user "e2e-unprivileged" (only system:authenticated, no RBAC bindings). */
  userToken: string
  binDir: string
  workDir: string
  logsDir: string
  /** ca.crt, sa.key (service-account signing key), sa.pub, tokens.csv. */
  pkiDir: string
  /** PIDs (= process-group ids) of etcd and kube-apiserver. */
  pids: { etcd: number; apiserver: number }
  version: string
  /** Runs <binDir>/kubectl --kubeconfig <kubeconfigPath> ...args. Never throws on a non-zero exit. */
  kubectl(args: string[], opts?: ExecOptions): Promise<ExecResult>
  /** Runs <binDir>/helm with KUBECONFIG set. Never throws on a non-zero exit. */
  helm(args: string[], opts?: ExecOptions): Promise<ExecResult>
  /** Raw HTTPS request to the apiserver (admin token unless `token` is given; null = anonymous). */
  request(
    method: string,
    urlPath: string,
    opts?: { body?: unknown; token?: string | null; headers?: Record<string, string> },
  ): Promise<{ status: number; body: string; json(): any }>
  /** A @kubernetes/client-node KubeConfig loaded from kubeconfigPath. */
  kubeConfig(): Promise<import('@kubernetes/client-node').KubeConfig>
  /** Last lines of a log ('kube-apiserver' | 'etcd'). */
  logTail(name: 'kube-apiserver' | 'etcd', lines?: number): string
  /** Stops both processes (whole process groups); removes the work dir unless keepLogs. */
  stop(opts?: StopOptions): Promise<void>
  /** True once stop() has completed. */
  readonly stopped: boolean
}

// ---------------------------------------------------------------------------------------------
// process-group bookkeeping: everything we start is killed when this process goes away.

const liveGroups = new Set<number>()
/** logs dirs of control planes not stopped yet, printed if the process is killed. */
const liveLogs = new Set<string>()
let hooksInstalled = false

export function killGroup(pgid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pgid, signal)
    return true
  } catch {
    return false
  }
}

export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export function installExitHooks(): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', () => {
    for (const g of liveGroups) killGroup(g, 'SIGKILL')
  })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = () => {
      for (const g of liveGroups) killGroup(g, 'SIGKILL')
      liveGroups.clear()
      for (const d of liveLogs) process.stderr.write(`# ${sig}: control plane killed; its logs are in ${d}\n`)
      liveLogs.clear()
      process.removeListener(sig, handler)
      if (process.listenerCount(sig) === 0) {
        // Nobody else cares: die of the signal as if we had never listened.
        process.kill(process.pid, sig)
      } else {
        // Other listeners (tap's signal-exit, tsx) may each wait for the others to re-raise;
        // give them a moment, then make sure the process does not hang on.
        setTimeout(() => process.exit(128 + (os.constants.signals[sig] ?? 15)), 3_000).unref()
      }
    }
    process.on(sig, handler)
  }
}

/** A detached sh that SIGKILLs the groups once `parent` is gone (covers SIGKILL of the test process). */
export function startWatchdog(parent: number, groups: number[]): ChildProcess {
  const script = 'p=$1; shift; while kill -0 "$p" 2>/dev/null; do sleep 1; done; ' + 'for g in "$@"; do kill -9 "-$g" 2>/dev/null; done'
  const w = spawn('/bin/sh', ['-c', script, 'mirrorhook-watchdog', String(parent), ...groups.map(String)], {
    detached: true,
    stdio: 'ignore',
  })
  w.unref()
  return w
}

/**
 * SIGTERM a started process's whole group, SIGKILL what is left after `graceMs`, and forget it.
 */
export async function stopSpawned(s: Spawned, graceMs = 5_000): Promise<void> {
  const g = s.child.pid
  if (!g) return
  if (groupAlive(g)) {
    killGroup(g, 'SIGTERM')
    const deadline = Date.now() + graceMs
    while (Date.now() < deadline && groupAlive(g)) await sleep(50)
    if (groupAlive(g)) {
      killGroup(g, 'SIGKILL')
      const hard = Date.now() + 5_000
      while (Date.now() < hard && groupAlive(g)) await sleep(50)
    }
  }
  await Promise.race([s.exited, sleep(2_000)])
  liveGroups.delete(g)
}

// ---------------------------------------------------------------------------------------------

/** Environment for the children: no proxy for loopback (webhooks live on 127.0.0.1). */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const k of Object.keys(env)) {
    if (/^(https?|all|ftp)_proxy$/i.test(k)) delete env[k]
  }
  const noProxy = ['127.0.0.1', 'localhost', '::1', ...(process.env.NO_PROXY ?? process.env.no_proxy ?? '').split(',')]
    .map((s) => s.trim())
    .filter((s, i, a) => s && a.indexOf(s) === i)
    .join(',')
  env.NO_PROXY = env.no_proxy = noProxy
  return { ...env, ...extra }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < n) ports.add(await freePort())
  return [...ports]
}

export function tail(file: string, lines = 40): string {
  try {
    const all = readFileSync(file, 'utf8').split('\n')
    return all.slice(-lines - 1).join('\n')
  } catch {
    return '(no log)'
  }
}

export function run(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: childEnv(opts.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${opts.timeoutMs ?? 60_000} ms]`
      child.kill('SIGKILL')
    }, opts.timeoutMs ?? 60_000)
    child.on('error', (e) => {
      clearTimeout(timer)
      resolve({ code: 127, stdout, stderr: stderr + String(e) })
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code: code ?? (signal === 'SIGKILL' ? 124 : 128), stdout, stderr })
    })
    child.stdin.on('error', () => {})
    child.stdin.end(opts.input ?? '')
  })
}

export function httpRequest(
  url: string,
  opts: {
    method?: string
    ca?: string
    headers?: Record<string, string>
    body?: string | Buffer
    timeoutMs?: number
    rejectUnauthorized?: boolean
  },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url)
    const mod = u.protocol === 'https:' ? https : http
    const headers = { ...opts.headers }
    // Node frames no body for DELETE (and GET) unless told its length.
    if (opts.body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-length')) {
      headers['Content-Length'] = String(Buffer.byteLength(opts.body))
    }
    const req = mod.request(
      u,
      {
        method: opts.method ?? 'GET',
        headers,
        ca: opts.ca,
        rejectUnauthorized: opts.rejectUnauthorized,
        agent: false,
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      },
    )
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)))
    req.on('error', reject)
    req.end(opts.body)
  })
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const DEBUG = /^(1|true|yes)$/i.test(process.env.MIRRORHOOK_CP_DEBUG ?? '')
function debug(msg: string): void {
  if (DEBUG) process.stderr.write(`# [controlplane ${new Date().toISOString()} pid ${process.pid}] ${msg}\n`)
}

export interface Spawned {
  child: ChildProcess
  exited: Promise<number | null>
  exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null
}

export function spawnLogged(bin: string, args: string[], logFile: string, detach: boolean, env: NodeJS.ProcessEnv = {}): Spawned {
  const fd = openSync(logFile, 'a')
  writeFileSync(fd, `# ${new Date().toISOString()} ${bin} ${args.join(' ')}\n`)
  const child = spawn(bin, args, {
    detached: true, // own process group: stop() kills the whole group
    stdio: ['ignore', fd, fd],
    env: childEnv(env),
  })
  closeSync(fd)
  const s: Spawned = { child, exitInfo: null, exited: Promise.resolve(null) }
  s.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      s.exitInfo = { code, signal }
      resolve(code)
    })
    child.on('error', (e) => {
      s.exitInfo = { code: 127, signal: null }
      writeFileSync(logFile, `spawn error: ${String(e)}\n`, { flag: 'a' })
      resolve(127)
    })
  })
  if (child.pid && !detach) liveGroups.add(child.pid)
  if (detach) child.unref()
  return s
}

export async function waitFor(what: string, timeoutMs: number, check: () => Promise<boolean>, died: () => string | null): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let lastErr = ''
  while (Date.now() < deadline) {
    const d = died()
    if (d) throw new Error(`${what}: ${d}`)
    try {
      if (await check()) return
    } catch (e) {
      lastErr = String((e as Error).message ?? e)
    }
    await sleep(100)
  }
  throw new Error(`${what}: not ready after ${timeoutMs / 1000} s${lastErr ? ` (last error: ${lastErr})` : ''}`)
}

/**
 * Starts etcd and kube-apiserver on free loopback ports and waits until /readyz is 200
 * (and namespace "default" exists). Throws with the log tails if they do not come up.
 * A port taken between choosing it and binding it (another test file starting at the same
 * moment) is retried with new ports, up to 3 attempts.
 */
export async function startControlPlane(opts: StartOptions = {}): Promise<ControlPlane> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts)
    } catch (e) {
      const msg = String((e as Error).message)
      if (attempt >= 3 || !/address already in use/i.test(msg)) throw e
      debug(`port clash, retrying (attempt ${attempt + 1}): ${msg.split('\n')[0]}`)
    }
  }
}

async function startOnce(opts: StartOptions): Promise<ControlPlane> {
  const bins = checkBinaries(opts.binDir)
  if (!bins.ok) throw new Error(bins.message)
  const binDir = bins.binDir
  const detach = opts.detach ?? false
  const ownWorkDir = !opts.workDir
  const workDir = opts.workDir ? path.resolve(opts.workDir) : mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-cp-'))
  const logsDir = path.join(workDir, 'logs')
  const pkiDir = path.join(workDir, 'pki')
  const etcdDataDir = path.join(workDir, 'etcd-data')
  for (const d of [workDir, logsDir, pkiDir]) mkdirSync(d, { recursive: true })
  rmSync(etcdDataDir, { recursive: true, force: true })
  debug(`starting in ${workDir}`)
  const kubeconfigPath = path.resolve(opts.kubeconfigPath ?? path.join(workDir, 'kubeconfig'))
  const etcdLog = path.join(logsDir, 'etcd.log')
  const apiLog = path.join(logsDir, 'kube-apiserver.log')
  if (!detach) installExitHooks()

  // --- PKI, tokens -------------------------------------------------------------------------
  // Service-account token signing wants RSA: generated while the CA is made.
  const saP = new Promise<KeyPairKeyObjectResult>((resolve, reject) =>
    generateKeyPair('rsa', { modulusLength: 2048 }, (e, publicKey, privateKey) => (e ? reject(e) : resolve({ publicKey, privateKey }))),
  )
  const ca = await createCa('mirrorhook-e2e-apiserver-ca', 7)
  const serving = await issueServing(ca, {
    dnsNames: ['localhost', 'kubernetes', 'kubernetes.default', 'kubernetes.default.svc', 'kubernetes.default.svc.cluster.local'],
    ipAddresses: ['127.0.0.1', '::1', '10.0.0.1'],
    validDays: 7,
  })
  const sa = await saP
  debug('certificates and keys made')
  const adminToken = randomBytes(24).toString('hex')
  const userToken = randomBytes(24).toString('hex')
  const f = (name: string, content: string) => {
    const p = path.join(pkiDir, name)
    writeFileSync(p, content, { mode: 0o600 })
    return p
  }
  const caFile = f('ca.crt', ca.certPem)
  const certFile = f('apiserver.crt', serving.certPem)
  const keyFile = f('apiserver.key', serving.keyPem)
  const saKey = f('sa.key', sa.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString())
  const saPub = f('sa.pub', sa.publicKey.export({ type: 'spki', format: 'pem' }).toString())
  const tokens = f('tokens.csv', `${adminToken},admin,admin,system:masters\n${userToken},e2e-unprivileged,e2e-unprivileged\n`)

  const started: Spawned[] = []
  let watchdog: ChildProcess | null = null
  let stopped = false

  async function stopProcesses(): Promise<void> {
    // The data is thrown away, so there is nothing to gain from a graceful shutdown: SIGKILL
    // both process groups at once (kube-apiserver first, then etcd) and wait until they are gone.
    for (const s of [...started].reverse()) {
      const g = s.child.pid
      if (g && groupAlive(g)) killGroup(g, 'SIGKILL')
    }
    for (const s of started) {
      const g = s.child.pid
      if (!g) continue
      const hard = Date.now() + 5_000
      while (Date.now() < hard && groupAlive(g)) await sleep(20)
      await Promise.race([s.exited, sleep(2_000)])
      liveGroups.delete(g)
    }
    if (watchdog?.pid) killGroup(watchdog.pid, 'SIGKILL')
  }

  async function stop(stopOpts: StopOptions = {}): Promise<void> {
    if (stopped) return
    debug(`stopping ${workDir} (keepLogs: ${!!stopOpts.keepLogs})`)
    await stopProcesses()
    debug(`stopped ${workDir}`)
    liveLogs.delete(logsDir)
    stopped = true
    rmSync(etcdDataDir, { recursive: true, force: true })
    if (stopOpts.keepLogs) {
      process.stderr.write(`# control-plane logs kept${stopOpts.reason ? ` (${stopOpts.reason})` : ''}: ${logsDir}\n`)
    } else if (ownWorkDir) {
      rmSync(workDir, { recursive: true, force: true })
    } else {
      for (const p of [logsDir, pkiDir]) rmSync(p, { recursive: true, force: true })
    }
  }

  const died = (name: string, s: Spawned, log: string) => () =>
    s.exitInfo ? `${name} exited (code ${s.exitInfo.code}, signal ${s.exitInfo.signal}); last lines of ${log}:\n${tail(log)}` : null

  try {
    // --- etcd --------------------------------------------------------------------------------
    const [clientPort, peerPort, apiPort] = (await distinctFreePorts(3)) as [number, number, number]
    const etcdUrl = `http://127.0.0.1:${clientPort}`
    const peerUrl = `http://127.0.0.1:${peerPort}`
    const etcd = spawnLogged(
      path.join(binDir, 'etcd'),
      [
        '--name=default',
        `--data-dir=${etcdDataDir}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        '--unsafe-no-fsync',
        '--log-level=warn',
      ],
      etcdLog,
      detach,
    )
    started.push(etcd)
    // kube-apiserver starts at once: its etcd client retries until etcd listens, which saves
    // the round of waiting for one and then the other.
    const etcdUp = waitFor(
      'etcd',
      30_000,
      async () => (await httpRequest(`${etcdUrl}/health`, { timeoutMs: 2_000 })).status === 200,
      died('etcd', etcd, etcdLog),
    )
    etcdUp.catch(() => {})

    // --- kube-apiserver ----------------------------------------------------------------------
    const server = `https://127.0.0.1:${apiPort}`
    const api = spawnLogged(
      path.join(binDir, 'kube-apiserver'),
      [
        `--etcd-servers=${etcdUrl}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--secure-port=${apiPort}`,
        `--cert-dir=${pkiDir}`,
        `--tls-cert-file=${certFile}`,
        `--tls-private-key-file=${keyFile}`,
        `--client-ca-file=${caFile}`,
        `--token-auth-file=${tokens}`,
        '--authorization-mode=RBAC',
        `--service-account-issuer=${server}`,
        `--service-account-key-file=${saPub}`,
        `--service-account-signing-key-file=${saKey}`,
        '--service-cluster-ip-range=10.0.0.0/24',
        '--allow-privileged=true',
        '--disable-admission-plugins=ServiceAccount',
        '--endpoint-reconciler-type=none',
        ...(opts.apiserverArgs ?? []),
      ],
      apiLog,
      detach,
    )
    started.push(api)
    if (!detach && etcd.child.pid && api.child.pid) watchdog = startWatchdog(process.pid, [etcd.child.pid, api.child.pid])

    const auth = { Authorization: `Bearer ${adminToken}` }
    await etcdUp
    debug('etcd healthy')
    await waitFor(
      `kube-apiserver at ${server}`,
      opts.readyTimeoutMs ?? 90_000,
      async () => (await httpRequest(`${server}/readyz`, { ca: ca.certPem, headers: auth, timeoutMs: 5_000 })).status === 200,
      () => died('etcd', etcd, etcdLog)() ?? died('kube-apiserver', api, apiLog)(),
    ).catch((e: Error) => {
      e.message += `\n--- last lines of ${apiLog}:\n${tail(apiLog)}\n--- last lines of ${etcdLog}:\n${tail(etcdLog, 15)}`
      throw e
    })
    debug('kube-apiserver ready')
    if (opts.waitForDefaultNamespace ?? true) {
      await waitFor(
        'namespace "default"',
        30_000,
        async () => (await httpRequest(`${server}/api/v1/namespaces/default`, { ca: ca.certPem, headers: auth })).status === 200,
        died('kube-apiserver', api, apiLog),
      )
    }
    const versionRes = await httpRequest(`${server}/version`, { ca: ca.certPem, headers: auth })
    const version = String(JSON.parse(versionRes.body).gitVersion)

    // --- kubeconfig ---------------------------------------------------------------------------
    const kubeconfig = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'mirrorhook-e2e',
          cluster: { server, 'certificate-authority-data': Buffer.from(ca.certPem).toString('base64') },
        },
      ],
      users: [{ name: 'admin', user: { token: adminToken } }],
      contexts: [{ name: 'mirrorhook-e2e', context: { cluster: 'mirrorhook-e2e', user: 'admin', namespace: 'default' } }],
      'current-context': 'mirrorhook-e2e',
      preferences: {},
    }
    mkdirSync(path.dirname(kubeconfigPath), { recursive: true })
    writeFileSync(kubeconfigPath, toYaml(kubeconfig), { mode: 0o600 })

    if (!detach) liveLogs.add(logsDir)
    debug(`ready: ${server} ${version} in ${workDir} (etcd pid ${etcd.child.pid}, kube-apiserver pid ${api.child.pid})`)
    const cp: ControlPlane = {
      server,
      port: apiPort,
      etcdUrl,
      kubeconfigPath,
      caPem: ca.certPem,
      adminToken,
      userToken,
      binDir,
      workDir,
      logsDir,
      pkiDir,
      pids: { etcd: etcd.child.pid!, apiserver: api.child.pid! },
      version,
      kubectl: (args, o = {}) => run(path.join(binDir, 'kubectl'), ['--kubeconfig', kubeconfigPath, ...args], o),
      helm: (args, o = {}) => run(path.join(binDir, 'helm'), args, { ...o, env: { KUBECONFIG: kubeconfigPath, ...o.env } }),
      async request(method, urlPath, o = {}) {
        const headers: Record<string, string> = { Accept: 'application/json', ...o.headers }
        const token = o.token === undefined ? adminToken : o.token
        if (token) headers.Authorization = `Bearer ${token}`
        let body: string | undefined
        if (o.body !== undefined) {
          body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body)
          headers['Content-Type'] ??= 'application/json'
        }
        const res = await httpRequest(`${server}${urlPath}`, { method, ca: ca.certPem, headers, body })
        return { ...res, json: () => JSON.parse(res.body) }
      },
      async kubeConfig() {
        const k8s = await import('@kubernetes/client-node')
        const kc = new k8s.KubeConfig()
        kc.loadFromFile(kubeconfigPath)
        return kc
      },
      logTail: (name, lines = 40) => tail(name === 'etcd' ? etcdLog : apiLog, lines),
      stop,
      get stopped() {
        return stopped
      },
    }
    return cp
  } catch (e) {
    // Failed to come up: kill what started, keep the logs for a look.
    await stopProcesses().catch(() => {})
    stopped = true
    rmSync(etcdDataDir, { recursive: true, force: true })
    if (ownWorkDir && /address already in use/i.test(String((e as Error).message))) {
      rmSync(workDir, { recursive: true, force: true }) // startControlPlane retries
    } else {
      ;(e as Error).message += `\n(control-plane logs kept in ${logsDir})`
    }
    throw e
  }
}
