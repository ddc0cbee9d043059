// kwok (sigs.k8s.io/kwok v0.8.0, built by test/k8s/build.sh) against the test API server:
// fake Nodes kept Ready, Pods on them moved through their lifecycle by Stages
// (test/support/kwok-stages.ts).
//
//   const kwok = await startKwok(cp, { nodes: 3, unreachable: { registries: ['docker.io'] } })
//   await kwok.setUnreachable({ registries: [] })   // the nodes reach Docker Hub again
//   await kwok.stop()
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { freePort, httpRequest, spawnLogged, stopSpawned, tail, waitFor, type ControlPlane, type Spawned } from './controlplane.js'
import { kwokStagesYaml, type PullStageTiming, type Unreachable } from './kwok-stages.js'

/** The annotation kwok selects its Nodes by (as kwokctl does). */
export const KWOK_NODE_ANNOTATION = 'kwok.x-k8s.io/node'

export interface KwokOptions {
  /** Nodes to create at start (default 1), named `<nodePrefix>-0`… */
  nodes?: number
  nodePrefix?: string
  /** Registries the nodes cannot reach (default none). */
  unreachable?: Unreachable
  timing?: PullStageTiming
  /** Extra labels on every node. */
  nodeLabels?: Record<string, string>
  /** Wait until the nodes are Ready and no longer tainted not-ready (needs kube-controller-manager; default true). */
  waitReady?: boolean
  detach?: boolean
}

export interface Kwok {
  nodes: string[]
  /** http://127.0.0.1:<port> (/healthz, /metrics) */
  url: string
  pid: number
  logFile: string
  unreachable: Unreachable
  /** Creates Nodes kwok manages (kwok adopts a Node when it is added, not when annotated later). */
  addNodes(names: string[], labels?: Record<string, string>): Promise<void>
  /** Declares which registries the nodes cannot reach; restarts kwok, which then replays every Pod. */
  setUnreachable(u: Unreachable): Promise<void>
  logTail(lines?: number): string
  stop(): Promise<void>
}

export function kwokNode(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  // As kwokctl creates a node (kwokctl scale node): the annotation kwok selects on, the
  // well-known labels the scheduler and kube-fledged use.
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { [KWOK_NODE_ANNOTATION]: 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        'node-role.kubernetes.io/agent': '',
        type: 'kwok',
        ...labels,
      },
    },
    status: { allocatable: { cpu: '32', memory: '256Gi', pods: '110' }, capacity: { cpu: '32', memory: '256Gi', pods: '110' } },
  }
}

export async function startKwok(cp: ControlPlane, opts: KwokOptions = {}): Promise<Kwok> {
  const dir = path.join(cp.workDir, 'kwok')
  mkdirSync(dir, { recursive: true })
  const logFile = path.join(cp.logsDir, 'kwok.log')
  const configFile = path.join(dir, 'stages.yaml')
  let unreachable: Unreachable = opts.unreachable ?? { registries: [] }
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let proc: Spawned | null = null

  async function launch(): Promise<void> {
    writeFileSync(configFile, kwokStagesYaml(unreachable, opts.timing))
    const p = spawnLogged(
      path.join(cp.binDir, 'kwok'),
      [
        `--kubeconfig=${cp.kubeconfigPath}`,
        `--config=${configFile}`,
        '--manage-all-nodes=false',
        `--manage-nodes-with-annotation-selector=${KWOK_NODE_ANNOTATION}=fake`,
        '--node-lease-duration-seconds=40',
        '--cidr=10.64.0.1/12',
        '--node-ip=10.63.0.1',
        `--server-address=127.0.0.1:${port}`,
      ],
      logFile,
      opts.detach ?? false,
    )
    proc = p
    await waitFor(
      'kwok',
      30_000,
      async () => (await httpRequest(`${url}/healthz`, { timeoutMs: 2_000 })).status === 200,
      () => (p.exitInfo ? `kwok exited (code ${p.exitInfo.code}); last lines of ${logFile}:\n${tail(logFile)}` : null),
    )
  }

  const nodes: string[] = []
  async function addNodes(names: string[], labels: Record<string, string> = {}): Promise<void> {
    // One apply for all: 200 Nodes are one request.
    const list = { apiVersion: 'v1', kind: 'List', items: names.map((n) => kwokNode(n, { ...opts.nodeLabels, ...labels })) }
    const r = await cp.kubectl(['apply', '-f', '-'], { input: JSON.stringify(list), timeoutMs: 120_000 })
    if (r.code !== 0) throw new Error(`creating kwok nodes failed: ${r.stderr}`)
    nodes.push(...names)
    if (opts.waitReady ?? true) await waitNodesReady(cp, names)
  }

  await launch()
  const count = opts.nodes ?? 1
  const prefix = opts.nodePrefix ?? 'kwok-node'
  if (count > 0) await addNodes(Array.from({ length: count }, (_, i) => `${prefix}-${i}`))

  return {
    nodes,
    url,
    get pid() {
      return proc?.child.pid ?? 0
    },
    logFile,
    get unreachable() {
      return unreachable
    },
    addNodes,
    async setUnreachable(u: Unreachable) {
      unreachable = u
      if (proc) await stopSpawned(proc)
      // A new kwok process has a new holder identity and would wait for the old one's node
      // leases to expire (40 s) before it manages the nodes and their Pods again.
      const r = await cp.request('DELETE', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases')
      if (r.status !== 200) throw new Error(`deleting the node leases: HTTP ${r.status} ${r.body.slice(0, 200)}`)
      await launch()
    },
    logTail: (lines = 40) => tail(logFile, lines),
    async stop() {
      if (proc) await stopSpawned(proc)
      proc = null
    },
  }
}

/** Waits until every named Node is Ready and has no not-ready/unreachable taint left. */
export async function waitNodesReady(cp: ControlPlane, names: string[], timeoutMs = 120_000): Promise<void> {
  const want = new Set(names)
  let last = ''
  await waitFor(
    `${names.length} kwok node(s) Ready and untainted`,
    timeoutMs,
    async () => {
      const r = await cp.request('GET', '/api/v1/nodes')
      if (r.status !== 200) return false
      const ready = (r.json().items as any[]).filter(
        (n) =>
          want.has(n.metadata.name) &&
          (n.status?.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True') &&
          !(n.spec?.taints ?? []).some((t: any) => /^node\.kubernetes\.io\/(not-ready|unreachable)$/.test(t.key)),
      ).length
      last = `${ready}/${want.size}`
      return ready === want.size
    },
    () => null,
  ).catch((e: Error) => {
    e.message += ` (${last} ready)`
    throw e
  })
}
