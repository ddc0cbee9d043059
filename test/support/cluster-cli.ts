// npm run cluster:up   — start the test cluster in the background (data under .cluster/): etcd,
//                        kube-apiserver, kube-controller-manager, kube-scheduler, kwok with N
//                        nodes, the kube-fledged stand-in and an OCI registry over TLS
// npm run cluster:down — stop them (by their recorded process groups) and remove .cluster/ data
// npx tsx test/support/cluster-cli.ts status — is it running, where is everything
//
// Options: --dir <dir> (default <repo>/.cluster), --kubeconfig <path> (default <dir>/kubeconfig),
// --nodes N (default 3), --unreachable docker.io,quay.io (registries the nodes cannot reach;
// default none), --control-plane-only (etcd and kube-apiserver only).
import { existsSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { REPO_ROOT, checkBinaries, groupAlive, startControlPlane } from './controlplane.js'
import { checkClusterBinaries, startCluster } from './cluster.js'

interface State {
  server: string
  kubeconfigPath: string
  logsDir: string
  binDir: string
  version: string
  startedAt: string
  groups: { name: string; pgid: number }[]
  nodes?: string[]
  unreachable?: string[]
  registry?: { host: string; caFile: string }
  kubeFledgedNamespace?: string
}

const STATE = 'state.json'
const OWN_ENTRIES = ['etcd-data', 'pki', 'logs', 'kubeconfig', 'kwok', 'registry', STATE]

function parseArgs(argv: string[]) {
  const [cmd = 'help', ...rest] = argv
  let dir = path.join(REPO_ROOT, '.cluster')
  let kubeconfig: string | undefined
  let nodes = 3
  let unreachable: string[] = []
  let controlPlaneOnly = false
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!
    const value = () => {
      const v = rest[++i]
      if (!v) fail(`${a} needs a value`)
      return v
    }
    if (a === '--dir') dir = path.resolve(value())
    else if (a === '--kubeconfig') kubeconfig = path.resolve(value())
    else if (a === '--nodes') {
      nodes = Number(value())
      if (!Number.isInteger(nodes) || nodes < 0 || nodes > 1000) fail(`--nodes: expected 0 to 1000, got ${rest[i]}`)
    } else if (a === '--unreachable') unreachable = value().split(',').filter(Boolean)
    else if (a === '--control-plane-only') controlPlaneOnly = true
    else if (cmd === 'up' && a === 'status') return { cmd: 'status', dir, kubeconfig, nodes, unreachable, controlPlaneOnly }
    else fail(`unknown argument: ${a}`)
  }
  return { cmd, dir, kubeconfig, nodes, unreachable, controlPlaneOnly }
}

function fail(msg: string): never {
  process.stderr.write(`cluster: ${msg}\n`)
  process.exit(1)
}

function readState(dir: string): State | null {
  try {
    return JSON.parse(readFileSync(path.join(dir, STATE), 'utf8')) as State
  } catch {
    return null
  }
}

/** Still our process? (guards against a recycled pid) */
function isOurs(pgid: number, name: string): boolean {
  if (!groupAlive(pgid)) return false
  try {
    const cmdline = readFileSync(`/proc/${pgid}/cmdline`, 'utf8')
    return cmdline.includes(name)
  } catch {
    return true // no /proc: trust the group check
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

async function stopGroups(state: State): Promise<void> {
  const ours = state.groups.filter((g) => isOurs(g.pgid, g.name))
  for (const g of [...ours].reverse()) {
    try {
      process.kill(-g.pgid, 'SIGTERM')
    } catch {}
  }
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline && ours.some((g) => groupAlive(g.pgid))) await sleep(100)
  for (const g of ours) {
    if (groupAlive(g.pgid)) {
      try {
        process.kill(-g.pgid, 'SIGKILL')
      } catch {}
    }
  }
}

function removeData(dir: string, state: State | null): void {
  for (const e of OWN_ENTRIES) rmSync(path.join(dir, e), { recursive: true, force: true })
  if (state && !state.kubeconfigPath.startsWith(dir + path.sep)) rmSync(state.kubeconfigPath, { force: true })
  try {
    if (readdirSync(dir).length === 0) rmdirSync(dir)
  } catch {}
}

function running(state: State | null): boolean {
  return !!state && state.groups.length > 0 && state.groups.every((g) => isOurs(g.pgid, g.name))
}

function printUsage(state: State): void {
  const pid = (name: string) => state.groups.find((g) => g.name === name)?.pgid
  const lines = [
    `control plane ${state.version} at ${state.server} (etcd pid ${pid('etcd')}, kube-apiserver pid ${pid('kube-apiserver')})`,
    `kubeconfig: ${state.kubeconfigPath}`,
    `logs:       ${state.logsDir} (one file per component)`,
    `binaries:   ${state.binDir}`,
  ]
  if (state.nodes) {
    lines.push(
      `kube-controller-manager pid ${pid('kube-controller-manager')}, kube-scheduler pid ${pid('kube-scheduler')}`,
      `kwok pid ${pid('kwok')}: ${state.nodes.length} node(s) ${state.nodes.join(', ')}; ` +
        (state.unreachable?.length ? `they cannot reach ${state.unreachable.join(', ')}` : 'they reach every registry'),
    )
  }
  if (state.registry) {
    lines.push(
      `registry pid ${pid('registry')}: https://${state.registry.host} (CA ${state.registry.caFile}); as a mirror: mirror.prefix: ${state.registry.host}`,
    )
  }
  if (state.kubeFledgedNamespace) {
    lines.push(`kube-fledged stand-in pid ${pid('kubefledged-main')}: ImageCaches in namespace ${state.kubeFledgedNamespace}`)
  }
  lines.push(
    `  export KUBECONFIG=${state.kubeconfigPath}`,
    `  ${path.join(state.binDir, 'kubectl')} get nodes,ns`,
    `  npm start    # mirrorhook against this cluster`,
    `stop with: npm run cluster:down`,
  )
  process.stdout.write(lines.join('\n') + '\n')
}

async function main(): Promise<void> {
  const { cmd, dir, kubeconfig, nodes, unreachable, controlPlaneOnly } = parseArgs(process.argv.slice(2))
  const state = readState(dir)

  if (cmd === 'up') {
    if (running(state)) {
      process.stdout.write('already running\n')
      printUsage(state!)
      return
    }
    if (state) {
      process.stdout.write('removing a stale control plane state\n')
      await stopGroups(state)
      removeData(dir, state)
    }
    let s: State
    if (controlPlaneOnly) {
      const bins = checkBinaries()
      if (!bins.ok) fail(bins.message)
      const cp = await startControlPlane({ workDir: dir, kubeconfigPath: kubeconfig, detach: true })
      s = {
        server: cp.server,
        kubeconfigPath: cp.kubeconfigPath,
        logsDir: cp.logsDir,
        binDir: cp.binDir,
        version: cp.version,
        startedAt: new Date().toISOString(),
        groups: [
          { name: 'etcd', pgid: cp.pids.etcd },
          { name: 'kube-apiserver', pgid: cp.pids.apiserver },
        ],
      }
    } else {
      const bins = checkClusterBinaries()
      if (!bins.ok) fail(bins.message)
      const c = await startCluster({
        workDir: dir,
        kubeconfigPath: kubeconfig,
        detach: true,
        nodes,
        unreachable: { registries: unreachable },
      })
      s = {
        server: c.cp.server,
        kubeconfigPath: c.cp.kubeconfigPath,
        logsDir: c.cp.logsDir,
        binDir: c.cp.binDir,
        version: c.cp.version,
        startedAt: new Date().toISOString(),
        groups: c.groups(),
        nodes: c.kwok.nodes,
        unreachable,
        registry: c.registry ? { host: c.registry.host, caFile: c.registry.caFile } : undefined,
        kubeFledgedNamespace: 'kube-fledged',
      }
    }
    writeFileSync(path.join(dir, STATE), JSON.stringify(s, null, 2) + '\n')
    printUsage(s)
  } else if (cmd === 'down') {
    if (!state) {
      if (existsSync(dir)) removeData(dir, null)
      process.stdout.write(`no control plane recorded in ${dir}\n`)
      return
    }
    await stopGroups(state)
    removeData(dir, state)
    process.stdout.write(`control plane stopped; removed its data in ${dir}\n`)
  } else if (cmd === 'status') {
    if (running(state)) printUsage(state!)
    else {
      process.stdout.write(state ? 'not running (stale state; run npm run cluster:down)\n' : 'not running\n')
      process.exitCode = 3
    }
  } else {
    process.stdout.write(
      'usage: tsx test/support/cluster-cli.ts up|down|status [--dir DIR] [--kubeconfig PATH] [--nodes N] [--unreachable R1,R2] [--control-plane-only]\n',
    )
    if (cmd !== 'help') process.exitCode = 2
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e: unknown) => fail(e instanceof Error ? e.message : String(e)),
)
