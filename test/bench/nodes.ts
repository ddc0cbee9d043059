// What the Node watch keeps in memory, and what one burst decision costs: N Nodes as a kubelet
// reports them (conditions, addresses, capacity, node info, 50 images with two names each, the
// largest first, as `nodeStatusMaxImages` leaves them), stored as the watch stores them
// (slimNode), against the objects as listed; then chooseRefreshes for all N Nodes becoming
// Ready against C one-image caches. No API server: the transform and the decision only.
// Run: node --expose-gc --import tsx test/bench/nodes.ts [nodes] [caches]
import type { V1Node } from '@kubernetes/client-node'
import { slimNode, viewOfNode } from '../../server/kube/nodes.js'
import { type CacheSummary, chooseRefreshes, type NodeSignal } from '../../server/prepull/nodes.js'

const NODES = Number(process.argv[2] ?? 2_000)
const CACHES = Number(process.argv[3] ?? 5_000)
const gc = (globalThis as { gc?: () => void }).gc
if (!gc) throw new Error('run with node --expose-gc --import tsx')

function kubeletNode(i: number): V1Node {
  const t = new Date().toISOString()
  const images = Array.from({ length: 50 }, (_, j) => {
    const repo = `m.daocloud.io/docker.io/library/app-${(i * 7 + j) % 400}`
    return { names: [`${repo}@sha256:${String(j).padStart(64, '0')}`, `${repo}:1.${j}`], sizeBytes: 500_000_000 - j * 1_000_000 }
  })
  return JSON.parse(
    JSON.stringify({
      metadata: {
        name: `node-${i}`,
        uid: `uid-${i}`,
        resourceVersion: String(1000 + i),
        labels: {
          'kubernetes.io/hostname': `node-${i}`,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': 'amd64',
          'node.kubernetes.io/instance-type': 'm5.xlarge',
          'topology.kubernetes.io/zone': `zone-${i % 3}`,
          pool: i % 2 ? 'cpu' : 'gpu',
        },
        annotations: { 'node.alpha.kubernetes.io/ttl': '0', 'volumes.kubernetes.io/controller-managed-attach-detach': 'true' },
      },
      spec: { podCIDR: `10.${i >> 8}.${i & 255}.0/24`, providerID: `aws:///zone/i-${i.toString(16).padStart(17, '0')}` },
      status: {
        capacity: { cpu: '4', memory: '16Gi', pods: '110', 'ephemeral-storage': '100Gi' },
        allocatable: { cpu: '3920m', memory: '15Gi', pods: '110', 'ephemeral-storage': '95Gi' },
        conditions: ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'].map((type) => ({
          type,
          status: type === 'Ready' ? 'True' : 'False',
          reason: type === 'Ready' ? 'KubeletReady' : `KubeletHasNo${type}`,
          message: 'kubelet is posting ready status',
          lastHeartbeatTime: t,
          lastTransitionTime: t,
        })),
        addresses: [
          { type: 'InternalIP', address: `10.0.${i >> 8}.${i & 255}` },
          { type: 'Hostname', address: `node-${i}` },
        ],
        nodeInfo: {
          machineID: 'm'.repeat(32),
          systemUUID: 's'.repeat(36),
          bootID: 'b'.repeat(36),
          kernelVersion: '6.1.0',
          osImage: 'Debian GNU/Linux 12',
          containerRuntimeVersion: 'containerd://1.7.20',
          kubeletVersion: 'v1.35.8',
          kubeProxyVersion: 'v1.35.8',
          operatingSystem: 'linux',
          architecture: 'amd64',
        },
        images,
      },
    }),
  ) as V1Node
}

function heapAfter<T>(make: () => T): { value: T; bytes: number } {
  gc!()
  const before = process.memoryUsage().heapUsed
  const value = make()
  gc!()
  return { value, bytes: process.memoryUsage().heapUsed - before }
}

const mib = (b: number) => (b / 1024 / 1024).toFixed(1)
const full = heapAfter(() => Array.from({ length: NODES }, (_, i) => kubeletNode(i)))
const slim = heapAfter(() => full.value.map(slimNode))
console.log(`${NODES} Nodes as listed: ${mib(full.bytes)} MiB (${Math.round(full.bytes / NODES)} B per Node)`)
console.log(`${NODES} Nodes as the watch stores them: ${mib(slim.bytes)} MiB (${Math.round(slim.bytes / NODES)} B per Node)`)

const caches: CacheSummary[] = Array.from({ length: CACHES }, (_, i) => ({
  name: `c${i}`,
  lists: [
    {
      images: [`m.daocloud.io/docker.io/library/app-${i}:1.${i % 50}`],
      nodeSelector: (i % 2 ? { pool: 'cpu' } : {}) as Record<string, string>,
    },
  ],
  inUse: true,
  processed: true,
  processing: i % 10 === 0,
  refreshRequested: false,
}))
const signals: NodeSignal[] = slim.value.map((n) => ({ reason: 'node-ready', node: n.metadata!.name!, labels: viewOfNode(n).labels }))
const views = new Map(slim.value.map((n) => [n.metadata!.name!, viewOfNode(n)]))
const base = { now: Date.now(), waiting: new Map(), node: (n: string) => views.get(n), lastCollectedAt: new Map(), busyRetryMs: 5000 }
const settings = { collectedRefreshMs: 600_000, nodeStatusMaxImages: 50 }
let started = process.hrtime.bigint()
const burst = chooseRefreshes({ ...base, ...settings, caches, signals })
const readyMs = Number(process.hrtime.bigint() - started) / 1e6
console.log(
  `${NODES} Nodes becoming Ready, ${CACHES} caches: ${burst.refresh.length} refreshes, ${burst.waiting.size} waiting (Processing), ${readyMs.toFixed(1)} ms`,
)
const lost: NodeSignal[] = slim.value.map((n) => ({
  reason: 'image-collected',
  node: n.metadata!.name!,
  labels: viewOfNode(n).labels,
  removed: ['m.daocloud.io/docker.io/library/app-1:1.1'],
}))
started = process.hrtime.bigint()
// Lists under the cap (the kubelet's -1), so every signal is looked at.
const collected = chooseRefreshes({ ...base, ...settings, nodeStatusMaxImages: -1, caches, signals: lost })
const lostMs = Number(process.hrtime.bigint() - started) / 1e6
console.log(`${NODES} Nodes each losing one image, ${CACHES} caches: ${collected.refresh.length} refreshes, ${lostMs.toFixed(1)} ms`)
