// kube-controller-manager and kube-scheduler (v1.35.8, built by test/k8s/build.sh) against the
// test API server: ReplicaSets and Deployments create Pods (through admission), Jobs run, the
// garbage collector deletes owned objects, the node-lifecycle controller lifts the not-ready
// taint the API server's TaintNodesByCondition admission puts on every new Node, and the
// scheduler binds Pods to the kwok nodes.
import path from 'node:path'
import { freePort, httpRequest, spawnLogged, stopSpawned, tail, waitFor, type ControlPlane, type Spawned } from './controlplane.js'

export interface ControllersOptions {
  /** Extra kube-controller-manager flags. */
  controllerManagerArgs?: string[]
  /** Extra kube-scheduler flags. */
  schedulerArgs?: string[]
  /** API rate of both (default 200 QPS, burst 400: the scale benchmark creates thousands of Pods). */
  qps?: number
  detach?: boolean
}

export interface Controllers {
  pids: { controllerManager: number; scheduler: number }
  logFiles: { controllerManager: string; scheduler: string }
  logTail(name: 'kube-controller-manager' | 'kube-scheduler', lines?: number): string
  stop(): Promise<void>
}

export async function startControllers(cp: ControlPlane, opts: ControllersOptions = {}): Promise<Controllers> {
  const kcmLog = path.join(cp.logsDir, 'kube-controller-manager.log')
  const schedLog = path.join(cp.logsDir, 'kube-scheduler.log')
  const qps = opts.qps ?? 200
  const [kcmPort, schedPort] = [await freePort(), await freePort()]
  const common = [
    `--kubeconfig=${cp.kubeconfigPath}`,
    `--authentication-kubeconfig=${cp.kubeconfigPath}`,
    `--authorization-kubeconfig=${cp.kubeconfigPath}`,
    '--bind-address=127.0.0.1',
    '--leader-elect=false',
    `--kube-api-qps=${qps}`,
    `--kube-api-burst=${qps * 2}`,
  ]
  const started: Spawned[] = []
  const stop = async () => {
    for (const s of [...started].reverse()) await stopSpawned(s)
  }
  try {
    const kcm = spawnLogged(
      path.join(cp.binDir, 'kube-controller-manager'),
      [
        ...common,
        `--secure-port=${kcmPort}`,
        // Every controller that runs by default (deployment, replicaset, job, garbage collector,
        // node-lifecycle, serviceaccount, serviceaccount-token, namespace…), plus nothing else.
        '--controllers=*',
        `--service-account-private-key-file=${path.join(cp.pkiDir, 'sa.key')}`,
        `--root-ca-file=${path.join(cp.pkiDir, 'ca.crt')}`,
        '--use-service-account-credentials=false',
        // No kubelet: kwok renews the node leases; these are the defaults, written out.
        '--node-monitor-period=5s',
        '--node-monitor-grace-period=50s',
        '--concurrent-deployment-syncs=10',
        '--concurrent-replicaset-syncs=10',
        '--concurrent-job-syncs=10',
        '--concurrent-gc-syncs=20',
        ...(opts.controllerManagerArgs ?? []),
      ],
      kcmLog,
      opts.detach ?? false,
    )
    started.push(kcm)
    const sched = spawnLogged(
      path.join(cp.binDir, 'kube-scheduler'),
      [...common, `--secure-port=${schedPort}`, ...(opts.schedulerArgs ?? [])],
      schedLog,
      opts.detach ?? false,
    )
    started.push(sched)
    const healthy = (name: string, s: Spawned, port: number, log: string) =>
      waitFor(
        name,
        90_000,
        async () =>
          (await httpRequest(`https://127.0.0.1:${port}/healthz`, { rejectUnauthorized: false, timeoutMs: 2_000 })).status === 200,
        () => (s.exitInfo ? `${name} exited (code ${s.exitInfo.code}); last lines of ${log}:\n${tail(log)}` : null),
      )
    await Promise.all([healthy('kube-controller-manager', kcm, kcmPort, kcmLog), healthy('kube-scheduler', sched, schedPort, schedLog)])
    return {
      pids: { controllerManager: kcm.child.pid!, scheduler: sched.child.pid! },
      logFiles: { controllerManager: kcmLog, scheduler: schedLog },
      logTail: (name, lines = 40) => tail(name === 'kube-scheduler' ? schedLog : kcmLog, lines),
      stop,
    }
  } catch (e) {
    await stop().catch(() => {})
    throw e
  }
}
