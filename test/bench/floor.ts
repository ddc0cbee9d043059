// mirrorhook against the floor: a bare Fastify 5 TLS server with the same certificate and server
// options that parses the same body and returns the same response bytes (floor-server.mjs).
// Figures, not a test:
//   npm run bench:floor [-- --pairs 5 --seconds 5 --warmup 2 --connections 16 --soak 600]
//   [--only '10 images,nothing'] (cases whose name starts so) [--no-startup] (skip the start-up timing)
//   [--cpu-prof DIR] (each server under the load writes a V8 CPU profile into DIR/mirrorhook or DIR/floor)
//
// - Load: wrk (Debian package; installed with apt-get when missing) over HTTPS keep-alive,
//   pinned to the last core; each server is pinned to core 0. Runs alternate mirrorhook, floor,
//   mirrorhook, floor, … so that both see the same machine load; the ratio is per pair.
// - Reviews (test/fixtures/bench/, written by make-fixtures.ts): a ReplicaSet Pod as the API server
//   sends it, with 1, 10 (2 init) and 40 images, and with 10 images of a registry the configuration
//   does not mirror (nothing to rewrite). "cold" varies every tag per request (no decision repeats).
// - mirrorhook runs `node dist/server/cli.js serve` at the default log level, its stdout read by
//   this process (a pipe, as a container runtime reads it). It touches no network: the config sets
//   `reachability.probes.enabled: false` (no probe of any registry) and `kubeFledged.enabled: false`,
//   and no cluster is found (KUBECONFIG names a missing file, HOME is empty), so no ConfigMap,
//   learning or pre-pull.
// - Both servers run with the image's MALLOC_TRIM_THRESHOLD_ (read from the Dockerfile; see serverEnv).
// - Per run: throughput (wrk), server CPU per review and minor page faults per 1,000 reviews
//   (/proc/PID/stat, all threads), latency p50/p99 (wrk), log bytes per review, and mirrorhook's own decision histogram
//   (mirrorhook_admission_duration_seconds, the difference of two scrapes).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { request as httpRequest } from 'node:http'
import { createServer } from 'node:net'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { ensureDevCertificates } from '../../server/tls/devcerts.js'

const args = process.argv.slice(2)
function option(name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? Number(args[i + 1]) : fallback
}
const PAIRS = option('pairs', 5)
const SECONDS = option('seconds', 5)
const WARMUP = option('warmup', 2)
const CONNECTIONS = option('connections', 16)
const SOAK = option('soak', 0)
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1]!.split(',') : undefined
const CPU_PROF = args.includes('--cpu-prof') ? args[args.indexOf('--cpu-prof') + 1] : undefined
const STARTUP = !args.includes('--no-startup')

const root = join(import.meta.dirname, '..', '..')
const fixtures = join(root, 'test', 'fixtures', 'bench')
const work = mkdtempSync(join(tmpdir(), 'mirrorhook-floor-'))
const lastCore = cpus().length - 1
const SERVER_CORE = '0'
const CLIENT_CORE = String(Math.max(lastCore, 1))

function ensureWrk(): void {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' })
  } catch (error) {
    // wrk --version exits 1 but prints; only a missing binary throws ENOENT.
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return
    console.log('wrk not found: apt-get update && apt-get install -y wrk')
    execFileSync('apt-get', ['update'], { stdio: 'inherit' })
    execFileSync('apt-get', ['install', '-y', 'wrk'], { stdio: 'inherit' })
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => resolve(port))
    })
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function get(url: string, ca?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https') ? request : httpRequest)(url, { ca, rejectUnauthorized: !!ca }, (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

function post(url: string, body: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', ca, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = ''
      res.on('data', (c) => (text += c))
      res.on('end', () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`status ${res.statusCode}: ${text}`))))
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function waitReady(url: string, ca: string, proc: ChildProcess, deadlineMs = 20_000): Promise<number> {
  const start = performance.now()
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`the server exited with code ${proc.exitCode} before it was ready`)
    try {
      if ((await get(url, ca)).status === 200) return performance.now() - start
    } catch {
      // not listening yet
    }
    if (performance.now() - start > deadlineMs) throw new Error(`${url} not ready after ${deadlineMs} ms`)
    await sleep(5)
  }
}

// CPU seconds (utime + stime, fields 14 and 15 of the full line) and minor page faults (field 10)
// of a process so far; the fields count from 0 after "pid (comm) ".
function processCounters(pid: number): { cpuSeconds: number; minorFaults: number } {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return { cpuSeconds: (Number(fields[11]) + Number(fields[12])) / 100, minorFaults: Number(fields[7]) }
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? 0) / 1024
}

interface Server {
  name: string
  proc: ChildProcess
  url: string
  readyMs: number
  logBytes: number
  logLines: number
  metricsUrl?: string
}

const certs = await ensureDevCertificates(join(work, 'certs'))
const ca = readFileSync(certs.caFile, 'utf8')
const configFile = join(work, 'mirrorhook.yaml')
writeFileSync(
  configFile,
  [
    '# The embedded defaults, without network: no registry probes, no pre-pull.',
    'mode: auto',
    'reachability:',
    '  probes:',
    '    enabled: false',
    'kubeFledged:',
    '  enabled: false',
    '',
  ].join('\n'),
)
// Both servers run with the glibc malloc setting the image ships (its Dockerfile's ENV). Without it,
// glibc gives the top of its heap back to the system whenever the freed top passes the default
// threshold and takes it again on the next allocation: whether a process falls into that depends on
// its heap layout, and one that does pays a page fault per review or so (measured on this machine:
// 8 to 1,085 minor faults per 1,000 reviews from one start to the next, the floor as well as
// mirrorhook, and about 5 µs more CPU per review). Each run prints the faults per review.
const MALLOC_TRIM_THRESHOLD = /^ENV MALLOC_TRIM_THRESHOLD_=(\d+)$/m.exec(readFileSync(join(root, 'Dockerfile'), 'utf8'))?.[1]
if (!MALLOC_TRIM_THRESHOLD) throw new Error('the Dockerfile sets no MALLOC_TRIM_THRESHOLD_')
const serverEnv = {
  PATH: process.env.PATH,
  HOME: join(work, 'home'),
  KUBECONFIG: join(work, 'no-kubeconfig'),
  MALLOC_TRIM_THRESHOLD_: MALLOC_TRIM_THRESHOLD,
}

async function startMirrorhook(profileDir?: string): Promise<Server> {
  const port = await freePort()
  const metricsPort = await freePort()
  const started = performance.now()
  const proc = spawn(
    'taskset',
    [
      '-c',
      SERVER_CORE,
      process.execPath,
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      join(root, 'dist', 'server', 'cli.js'),
      'serve',
      '--config',
      configFile,
      '--port',
      String(port),
      '--metrics-port',
      String(metricsPort),
      '--tls-cert',
      certs.certFile,
      '--tls-key',
      certs.keyFile,
    ],
    { env: serverEnv, stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const server: Server = {
    name: 'mirrorhook',
    proc,
    url: `https://127.0.0.1:${port}`,
    readyMs: 0,
    logBytes: 0,
    logLines: 0,
    metricsUrl: `http://127.0.0.1:${metricsPort}/metrics`,
  }
  proc.stdout!.on('data', (chunk: Buffer) => {
    server.logBytes += chunk.length
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) server.logLines++
  })
  await waitReady(`${server.url}/readyz`, ca, proc)
  server.readyMs = performance.now() - started
  return server
}

async function startFloor(responsesFile: string, profileDir?: string): Promise<Server> {
  const port = await freePort()
  const started = performance.now()
  const proc = spawn(
    'taskset',
    [
      '-c',
      SERVER_CORE,
      process.execPath,
      ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []),
      join(import.meta.dirname, 'floor-server.mjs'),
      String(port),
      certs.certFile,
      certs.keyFile,
      responsesFile,
    ],
    { env: serverEnv, stdio: ['ignore', 'inherit', 'inherit'] },
  )
  const server: Server = { name: 'floor', proc, url: `https://127.0.0.1:${port}`, readyMs: 0, logBytes: 0, logLines: 0 }
  await waitReady(`${server.url}/readyz`, ca, proc)
  server.readyMs = performance.now() - started
  return server
}

async function stop(server: Server): Promise<void> {
  const exited = new Promise((r) => server.proc.once('exit', r))
  server.proc.kill('SIGTERM')
  await exited
}

// ---- load ----------------------------------------------------------------------------------

const LUA = join(work, 'post.lua')
writeFileSync(
  LUA,
  `-- POST one AdmissionReview; with "cold", every request gets new tags (no decision repeats)
local body, cold, n = nil, false, 0
function init(args)
  local f = io.open(args[1], "rb"); body = f:read("*a"); f:close()
  cold = args[2] == "cold"
  wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
end
function request()
  if not cold then return wrk.request() end
  n = n + 1
  local b = body:gsub(":v?(%d+%.[%d.]+)", function(t) return ":" .. t .. "-" .. n end)
  return wrk.format(nil, nil, nil, b)
end
`,
)

interface RunResult {
  rps: number
  cpuUsPerReview: number
  // Minor page faults of the server per 1,000 reviews.
  faultsPerKiloReview: number
  p50Ms: number
  p99Ms: number
  requests: number
  errors: number
  logBytesPerReview: number
  logLinesPerReview: number
  histogram?: Map<number, number>
}

function parseDuration(text: string): number {
  const m = /([\d.]+)(us|ms|s|m)/.exec(text)
  if (!m) return NaN
  const v = Number(m[1])
  return m[2] === 'us' ? v / 1000 : m[2] === 'ms' ? v : m[2] === 's' ? v * 1000 : v * 60_000
}

function wrk(url: string, file: string, seconds: number, cold: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      'taskset',
      [
        '-c',
        CLIENT_CORE,
        'wrk',
        '-t1',
        `-c${CONNECTIONS}`,
        `-d${seconds}s`,
        '--latency',
        '-s',
        LUA,
        `${url}/mutate`,
        '--',
        file,
        cold ? 'cold' : 'warm',
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    )
    let out = ''
    p.stdout!.on('data', (c) => (out += c))
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`wrk exited ${code}: ${out}`))))
  })
}

async function scrapeHistogram(server: Server): Promise<Map<number, number>> {
  const text = (await get(server.metricsUrl!)).body
  const buckets = new Map<number, number>()
  for (const m of text.matchAll(/^mirrorhook_admission_duration_seconds_bucket\{le="([^"]+)"\} (\d+)/gm)) {
    buckets.set(m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2]))
  }
  return buckets
}

export function metricValue(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+-]+)`, 'm').exec(text)
  return m ? Number(m[1]) : NaN
}

async function run(server: Server, file: string, cold: boolean, seconds = SECONDS): Promise<RunResult> {
  await wrk(server.url, file, WARMUP, cold)
  const before = server.metricsUrl ? await scrapeHistogram(server) : undefined
  const counters0 = processCounters(server.proc.pid!)
  const log0 = [server.logBytes, server.logLines]
  const out = await wrk(server.url, file, seconds, cold)
  const counters1 = processCounters(server.proc.pid!)
  await sleep(50) // the last log lines
  const after = server.metricsUrl ? await scrapeHistogram(server) : undefined
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  const errors = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0) + Number(/Socket errors:.*timeout (\d+)/.exec(out)?.[1] ?? 0)
  const histogram = before && after ? new Map([...after].map(([le, n]) => [le, n - (before.get(le) ?? 0)])) : undefined
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
    cpuUsPerReview: ((counters1.cpuSeconds - counters0.cpuSeconds) * 1e6) / Math.max(requests, 1),
    faultsPerKiloReview: ((counters1.minorFaults - counters0.minorFaults) * 1000) / Math.max(requests, 1),
    p50Ms: parseDuration(/^\s+50%\s+(\S+)/m.exec(out)?.[1] ?? ''),
    p99Ms: parseDuration(/^\s+99%\s+(\S+)/m.exec(out)?.[1] ?? ''),
    requests,
    errors,
    logBytesPerReview: (server.logBytes - log0[0]!) / Math.max(requests, 1),
    logLinesPerReview: (server.logLines - log0[1]!) / Math.max(requests, 1),
    histogram,
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

function quantile(h: Map<number, number>, q: number): string {
  const total = h.get(Infinity) ?? 0
  if (total === 0) return 'n/a'
  for (const [le, n] of [...h].sort((a, b) => a[0] - b[0])) {
    if (n >= q * total) return le === Infinity ? '> last bucket' : `≤ ${(le * 1e6).toFixed(0)} µs`
  }
  return 'n/a'
}

function printHistogram(h: Map<number, number>): void {
  const total = h.get(Infinity) ?? 0
  const rows = [...h].sort((a, b) => a[0] - b[0])
  let prev = 0
  const cells: string[] = []
  for (const [le, n] of rows) {
    if (le > 0.001 && n - prev === 0 && le !== Infinity) continue
    const label = le === Infinity ? '+Inf' : `≤${(le * 1e6).toFixed(0)}µs`
    cells.push(`${label} ${((100 * (n - prev)) / Math.max(total, 1)).toFixed(1)}%`)
    prev = n
  }
  console.log(`    server-side decision, ${total} reviews: p50 ${quantile(h, 0.5)}, p99 ${quantile(h, 0.99)}`)
  console.log(`    buckets: ${cells.join(' | ')}`)
}

const fmt = (r: RunResult) =>
  `${r.rps.toFixed(0).padStart(6)} rev/s  cpu ${r.cpuUsPerReview.toFixed(0).padStart(4)} µs/rev  faults ${r.faultsPerKiloReview.toFixed(0).padStart(4)}/krev  p50 ${r.p50Ms.toFixed(2)} ms  p99 ${r.p99Ms.toFixed(2)} ms` +
  (r.errors ? `  ERRORS ${r.errors}` : '')

// ---- main ----------------------------------------------------------------------------------

ensureWrk()
console.log(`mirrorhook vs floor: ${PAIRS} pairs × ${SECONDS} s (after ${WARMUP} s warm-up), ${CONNECTIONS} connections`)
console.log(
  `servers on core ${SERVER_CORE}, wrk on core ${CLIENT_CORE} of ${cpus().length}; load average at start ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}`,
)

const cases = [
  { name: '10 images', file: 'review-10-images.json', cold: false },
  { name: '10 images, cold', file: 'review-10-images.json', cold: true },
  { name: '1 image', file: 'review-1-image.json', cold: false },
  { name: '40 images', file: 'review-40-images.json', cold: false },
  { name: 'nothing to rewrite (10 images)', file: 'review-10-kept.json', cold: false },
].filter((c) => !ONLY || ONLY.some((o) => c.name.startsWith(o)))

const readyTimes: number[] = []
let mirrorhook = await startMirrorhook(CPU_PROF && join(CPU_PROF, 'mirrorhook'))
readyTimes.push(mirrorhook.readyMs)
// The floor answers with exactly the bytes mirrorhook answered for each fixture.
const responses: Record<string, string> = {}
for (const c of cases) {
  const body = readFileSync(join(fixtures, c.file), 'utf8')
  const uid = (JSON.parse(body) as { request: { uid: string } }).request.uid
  responses[uid] = await post(`${mirrorhook.url}/mutate`, body, ca)
  console.log(`${c.file}: request ${body.length} B, response ${responses[uid].length} B`)
}
const responsesFile = join(work, 'responses.json')
writeFileSync(responsesFile, JSON.stringify(responses))
const floor = await startFloor(responsesFile, CPU_PROF && join(CPU_PROF, 'floor'))

const summary: string[] = []
for (const c of cases) {
  const file = join(fixtures, c.file)
  console.log(`\n== ${c.name} (${c.file}${c.cold ? ', every tag new per request' : ''})`)
  const ratios: number[] = []
  const cpuRatios: number[] = []
  const histogram = new Map<number, number>()
  let logLines = 0
  let logBytes = 0
  for (let pair = 1; pair <= PAIRS; pair++) {
    const a = await run(mirrorhook, file, c.cold)
    const b = await run(floor, file, c.cold)
    for (const [le, n] of a.histogram ?? []) histogram.set(le, (histogram.get(le) ?? 0) + n)
    logLines += a.logLinesPerReview / PAIRS
    logBytes += a.logBytesPerReview / PAIRS
    ratios.push(a.rps / b.rps)
    cpuRatios.push(b.cpuUsPerReview / a.cpuUsPerReview)
    console.log(`  pair ${pair}: mirrorhook ${fmt(a)}`)
    console.log(
      `          floor      ${fmt(b)}   ratio ${(a.rps / b.rps).toFixed(3)} (cpu ${(b.cpuUsPerReview / a.cpuUsPerReview).toFixed(3)})`,
    )
  }
  console.log(
    `  ratio median ${median(ratios).toFixed(3)} (range ${Math.min(...ratios).toFixed(3)}–${Math.max(...ratios).toFixed(3)}); ` +
      `cpu-per-review ratio median ${median(cpuRatios).toFixed(3)}`,
  )
  console.log(`  mirrorhook log: ${logLines.toFixed(3)} lines and ${logBytes.toFixed(0)} bytes per review`)
  printHistogram(histogram)
  summary.push(
    `${c.name.padEnd(32)} ratio median ${median(ratios).toFixed(3)} (${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}), decision p99 ${quantile(histogram, 0.99)}`,
  )
}

const metricsText = (await get(mirrorhook.metricsUrl!)).body
console.log(
  `\nmirrorhook RSS ${rssMiB(mirrorhook.proc.pid!).toFixed(0)} MiB; log queue ${metricValue(metricsText, 'mirrorhook_log_queue_bytes')} B, ` +
    `dropped lines ${metricValue(metricsText, 'mirrorhook_log_dropped_total')}`,
)
await stop(floor)

if (SOAK > 0) {
  const file = join(fixtures, 'review-10-images.json')
  console.log(`\n== soak: 10 images, ${SOAK} s at full load`)
  await wrk(mirrorhook.url, file, 30, false)
  const rssAfterWarmup = rssMiB(mirrorhook.proc.pid!)
  console.log(`  after 30 s warm-up: RSS ${rssAfterWarmup.toFixed(0)} MiB`)
  const load = wrk(mirrorhook.url, file, SOAK, false)
  let done = false
  void load.then(() => (done = true))
  const step = Math.max(10, Math.round(SOAK / 20))
  for (let t = step; !done; t += step) {
    await Promise.race([sleep(step * 1000), load])
    const text = (await get(mirrorhook.metricsUrl!)).body
    console.log(
      `  t=${String(Math.min(t, SOAK)).padStart(4)} s  RSS ${rssMiB(mirrorhook.proc.pid!).toFixed(0)} MiB  log queue ${metricValue(text, 'mirrorhook_log_queue_bytes')} B  ` +
        `dropped ${metricValue(text, 'mirrorhook_log_dropped_total')}`,
    )
  }
  const out = await load
  const rssEnd = rssMiB(mirrorhook.proc.pid!)
  console.log(
    `  ${/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]} reviews/s; RSS at end ${rssEnd.toFixed(0)} MiB = ${((100 * rssEnd) / rssAfterWarmup - 100).toFixed(1)} % vs after warm-up`,
  )
  summary.push(
    `soak ${SOAK} s: RSS ${rssAfterWarmup.toFixed(0)} → ${rssEnd.toFixed(0)} MiB (${((100 * rssEnd) / rssAfterWarmup - 100).toFixed(1)} %)`,
  )
}
await stop(mirrorhook)

if (CPU_PROF) console.log(`\nCPU profiles of both servers under load written into ${CPU_PROF}/mirrorhook and ${CPU_PROF}/floor`)

// Start-up: spawn to the first 200 from /readyz, no cluster.
for (let i = 0; STARTUP && i < 4; i++) {
  mirrorhook = await startMirrorhook()
  readyTimes.push(mirrorhook.readyMs)
  await stop(mirrorhook)
}
const floorReady: number[] = []
for (let i = 0; STARTUP && i < 5; i++) {
  const f = await startFloor(responsesFile)
  floorReady.push(f.readyMs)
  await stop(f)
}
if (STARTUP) {
  console.log(`\nstart-up until ready (spawn to first 200 from /readyz), 5 starts:`)
  console.log(`  mirrorhook serve: median ${median(readyTimes).toFixed(0)} ms (${readyTimes.map((t) => t.toFixed(0)).join(', ')})`)
  console.log(`  floor:            median ${median(floorReady).toFixed(0)} ms (${floorReady.map((t) => t.toFixed(0)).join(', ')})`)
  summary.push(`serve ready: median ${median(readyTimes).toFixed(0)} ms (floor ${median(floorReady).toFixed(0)} ms)`)
}

console.log(
  `\nsummary (load average at end ${loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')}):`,
)
for (const line of summary) console.log(`  ${line}`)
