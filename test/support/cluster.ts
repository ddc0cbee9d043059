// The whole test cluster: etcd + kube-apiserver (controlplane.ts), kube-controller-manager and
// kube-scheduler (controllers.ts), kwok with N nodes (kwok.ts), the kube-fledged stand-in
// (kubefledged.ts) with kube-fledged's ImageCache CRD, and a real OCI registry over TLS
// (registry.ts).
//
//   const cluster = await startCluster({ nodes: 3, unreachable: { registries: ['docker.io'] } })
//   await cluster.cp.kubectl(['get', 'nodes'])
//   await cluster.stop()
import { appendFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import {
  checkBinaries,
  CLUSTER_BINARIES,
  REPO_ROOT,
  spawnLogged,
  startControlPlane,
  stopSpawned,
  type ControlPlane,
  type Spawned,
  type StartOptions,
  type StopOptions,
} from './controlplane.js'
import { startControllers, type Controllers, type ControllersOptions } from './controllers.js'
import { startKubeFledged, type KubeFledged, type KubeFledgedOptions } from './kubefledged.js'
import { startKwok, type Kwok, type KwokOptions } from './kwok.js'
import type { PullStageTiming, Unreachable } from './kwok-stages.js'
import { startRegistry, type Registry } from './registry.js'

export const IMAGECACHE_CRD = fileURLToPath(new URL('../fixtures/kubefledged/imagecache-crd.yaml', import.meta.url))

export interface ClusterOptions extends StartOptions {
  /** kwok nodes (default 2). */
  nodes?: number
  /** Registries the kwok nodes cannot reach (default none). */
  unreachable?: Unreachable
  timing?: PullStageTiming
  kwok?: Omit<KwokOptions, 'nodes' | 'unreachable' | 'timing' | 'detach'>
  controllers?: Omit<ControllersOptions, 'detach'>
  /** The kube-fledged stand-in (default on); false: neither the stand-in nor its CRD. */
  kubeFledged?: false | Omit<KubeFledgedOptions, 'kubeconfigPath'>
  /** The OCI registry (default on). */
  registry?: boolean
}

export interface Cluster {
  cp: ControlPlane
  controllers: Controllers
  kwok: Kwok
  kubeFledged: KubeFledged | null
  /** With `detach`, the stand-in runs as a process of its own (kubefledged-main.ts). */
  kubeFledgedPid: number | null
  registry: Registry | null
  /** Every process started, by name (process-group ids). */
  groups(): { name: string; pgid: number }[]
  /** Stops everything, the control plane last. */
  stop(opts?: StopOptions): Promise<void>
}

export function checkClusterBinaries(binDir?: string) {
  return checkBinaries(binDir, CLUSTER_BINARIES)
}

export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  const bins = checkClusterBinaries(opts.binDir)
  if (!bins.ok) throw new Error(bins.message)
  const cp = await startControlPlane(opts)
  let controllers = null as Controllers | null
  let kwok = null as Kwok | null
  let kubeFledged = null as KubeFledged | null
  let kubeFledgedProc = null as Spawned | null
  let registry = null as Registry | null
  const stopParts = async () => {
    await kubeFledged?.stop().catch(() => {})
    if (kubeFledgedProc) await stopSpawned(kubeFledgedProc).catch(() => {})
    await kwok?.stop().catch(() => {})
    await controllers?.stop().catch(() => {})
    await registry?.stop().catch(() => {})
  }
  try {
    // Everything after the control plane starts at once: the controllers, kwok (whose Nodes
    // wait for the node-lifecycle controller to lift their not-ready taint), the registry and
    // the ImageCache CRD with the stand-in.
    const regP =
      opts.registry === false
        ? Promise.resolve(null)
        : startRegistry({ binDir: cp.binDir, dir: path.join(cp.workDir, 'registry'), logsDir: cp.logsDir, detach: opts.detach })
    const controllersP = startControllers(cp, { ...opts.controllers, detach: opts.detach })
    const kwokP = startKwok(cp, {
      ...opts.kwok,
      nodes: opts.nodes ?? 2,
      unreachable: opts.unreachable,
      timing: opts.timing,
      detach: opts.detach,
    })
    const kubeFledgedP = (async () => {
      if (opts.kubeFledged === false) return
      const ns = opts.kubeFledged?.namespace ?? 'kube-fledged'
      const [crd, r] = await Promise.all([cp.kubectl(['apply', '-f', IMAGECACHE_CRD]), cp.kubectl(['create', 'namespace', ns])])
      if (crd.code !== 0) throw new Error(`ImageCache CRD: ${crd.stderr}`)
      if (r.code !== 0 && !/AlreadyExists/.test(r.stderr)) throw new Error(`namespace ${ns}: ${r.stderr}`)
      const established = await cp.kubectl(['wait', '--for=condition=Established', '--timeout=30s', 'crd/imagecaches.kubefledged.io'])
      if (established.code !== 0) throw new Error(`ImageCache CRD not established: ${established.stderr}`)
      const kfLog = path.join(cp.logsDir, 'kube-fledged.log')
      if (opts.detach) {
        const kf = opts.kubeFledged || {}
        kubeFledgedProc = spawnLogged(
          process.execPath,
          [
            '--import',
            'tsx',
            path.join(REPO_ROOT, 'test', 'support', 'kubefledged-main.ts'),
            '--kubeconfig',
            cp.kubeconfigPath,
            ...(kf.namespace ? ['--namespace', kf.namespace] : []),
            ...(kf.imagePullDeadlineMs ? ['--image-pull-deadline-seconds', String(kf.imagePullDeadlineMs / 1000)] : []),
            ...(kf.refreshFrequencyMs !== undefined ? ['--image-cache-refresh-seconds', String(kf.refreshFrequencyMs / 1000)] : []),
          ],
          kfLog,
          true,
        )
      } else
        kubeFledged = await startKubeFledged({
          log: (line) => appendFileSync(kfLog, `${new Date().toISOString()} ${line}\n`),
          ...opts.kubeFledged,
          kubeconfigPath: cp.kubeconfigPath,
        })
    })()
    // Every part is kept as it comes up, so that a failure of one stops the others.
    const parts = await Promise.allSettled([
      controllersP.then((c) => (controllers = c)),
      kwokP.then((k) => (kwok = k)),
      regP.then((r) => (registry = r)),
      kubeFledgedP,
    ])
    const failed = parts.find((p) => p.status === 'rejected')
    if (failed) throw failed.reason
  } catch (e) {
    await stopParts()
    await cp.stop({ keepLogs: true, reason: 'the cluster did not come up' })
    throw e
  }
  return {
    cp,
    controllers: controllers!,
    kwok: kwok!,
    kubeFledged,
    registry,
    kubeFledgedPid: kubeFledgedProc?.child.pid ?? null,
    groups: () => [
      { name: 'etcd', pgid: cp.pids.etcd },
      { name: 'kube-apiserver', pgid: cp.pids.apiserver },
      { name: 'kube-controller-manager', pgid: controllers!.pids.controllerManager },
      { name: 'kube-scheduler', pgid: controllers!.pids.scheduler },
      { name: 'kwok', pgid: kwok!.pid },
      ...(registry ? [{ name: 'registry', pgid: registry.pid }] : []),
      ...(kubeFledgedProc?.child.pid ? [{ name: 'kubefledged-main', pgid: kubeFledgedProc.child.pid }] : []),
    ],
    async stop(stopOpts: StopOptions = {}) {
      await stopParts()
      await cp.stop(stopOpts)
    },
  }
}
