// npm run cluster:up   — start etcd + kube-apiserver in the background (data under .cluster/)
// npm run cluster:down — stop them (by their recorded process groups) and remove .cluster/ data
// npx tsx test/support/cluster-cli.ts status — is it running, where is the kubeconfig
//
// Options: --dir <dir> (default <repo>/.cluster), --kubeconfig <path> (default <dir>/kubeconfig).
import { existsSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { REPO_ROOT, checkBinaries, groupAlive, startControlPlane } from './controlplane.js'

interface State {
  server: string
  kubeconfigPath: string
  logsDir: string
  binDir: string
  version: string
  startedAt: string
  groups: { name: string; pgid: number }[]
}

const STATE = 'state.json'
const OWN_ENTRIES = ['etcd-data', 'pki', 'logs', 'kubeconfig', STATE]

function parseArgs(argv: string[]) {
  const [cmd = 'help', ...rest] = argv
  let dir = path.join(REPO_ROOT, '.cluster')
  let kubeconfig: string | undefined
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!
    const value = () => {
      const v = rest[++i]
      if (!v) fail(`${a} needs a value`)
      return v
    }
    if (a === '--dir') dir = path.resolve(value())
    else if (a === '--kubeconfig') kubeconfig = path.resolve(value())
    else if (cmd === 'up' && a === 'status') return { cmd: 'status', dir, kubeconfig }
    else fail(`unknown argument: ${a}`)
  }
  return { cmd, dir, kubeconfig }
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
  process.stdout.write(
    `control plane ${state.version} at ${state.server}\n` +
      `kubeconfig: ${state.kubeconfigPath}\n` +
      `logs:       ${state.logsDir}\n` +
      `binaries:   ${state.binDir}\n` +
      `  export KUBECONFIG=${state.kubeconfigPath}\n` +
      `  ${path.join(state.binDir, 'kubectl')} get ns\n` +
      `stop with: npm run cluster:down\n`,
  )
}

async function main(): Promise<void> {
  const { cmd, dir, kubeconfig } = parseArgs(process.argv.slice(2))
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
    const bins = checkBinaries()
    if (!bins.ok) fail(bins.message)
    const cp = await startControlPlane({ workDir: dir, kubeconfigPath: kubeconfig, detach: true })
    const s: State = {
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
    process.stdout.write('usage: tsx test/support/cluster-cli.ts up|down|status [--dir DIR] [--kubeconfig PATH]\n')
    if (cmd !== 'help') process.exitCode = 2
  }
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e: unknown) => fail(e instanceof Error ? e.message : String(e)),
)
