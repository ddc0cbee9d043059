// What `mirrorhook state` and `mirrorhook rewrite` read: the running server's
// GET /state, or the shared ConfigMap through a kubeconfig.
import { DEFAULT_NAMESPACE } from '../core/config.js'
import type { Policy } from '../core/policy.js'
import type { ReachabilityPolicy } from './config.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { findKubeConfig } from '../kube/kubeconfig.js'
import { parseSnapshot, recordFromJson, SnapshotError, type StateSnapshot, viewFromSnapshot } from './snapshot.js'
import { describeEvidence } from './state.js'

export interface StateSource {
  // http://127.0.0.1:9090 (the ops listener) or its /state URL.
  url?: string
  // Read the ConfigMap through the kubeconfig instead.
  fromCluster?: boolean
  namespace?: string
  configMap?: string
}

export interface LoadedState {
  snapshot: StateSnapshot
  // Where it came from, for people: "http://127.0.0.1:9090/state", "ConfigMap mirrorhook/mirrorhook-reachability".
  source: string
}

export class StateSourceError extends Error {}

export function stateUrl(url: string): string {
  const u = new URL(url)
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/state'
  return u.toString()
}

export async function fetchState(url: string, timeoutMs = 5000): Promise<LoadedState> {
  const target = stateUrl(url)
  let response: Response
  try {
    response = await fetch(target, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'application/json' } })
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause
    throw new StateSourceError(`cannot reach ${target}: ${cause?.code ?? cause?.message ?? (error as Error).message}`)
  }
  if (!response.ok) throw new StateSourceError(`${target} answered HTTP ${response.status}`)
  let body: unknown
  try {
    body = await response.json()
  } catch {
    throw new StateSourceError(`${target} did not answer JSON`)
  }
  try {
    return { snapshot: parseSnapshot(body, target), source: target }
  } catch (error) {
    throw new StateSourceError((error as SnapshotError).message)
  }
}

export async function readClusterState(
  policy: ReachabilityPolicy,
  source: StateSource,
  env: NodeJS.ProcessEnv = process.env,
): Promise<LoadedState> {
  const kube = await findKubeConfig(env)
  if (!kube)
    throw new StateSourceError('no Kubernetes API found (in-cluster, KUBECONFIG or ~/.kube/config); use --url to ask a running server')
  const persistence = policy.config.reachability.persistence
  const namespace = source.namespace ?? persistence.namespace ?? (env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE)
  const { ConfigMapStore } = await import('./store.js')
  const store = new ConfigMapStore(kube.kubeConfig, namespace, source.configMap ?? persistence.configMap)
  let stored
  try {
    stored = await store.read()
  } catch (error) {
    if (error instanceof SnapshotError) throw new StateSourceError(error.message)
    const e = error as { code?: number; body?: unknown; message?: string }
    throw new StateSourceError(`cannot read ${store.where}: ${e.code ? `HTTP ${e.code}` : (e.message ?? String(error))}`)
  }
  if (!stored.exists) throw new StateSourceError(`${store.where} does not exist: no replica has written state yet`)
  const snapshot: StateSnapshot = stored.snapshot ?? { version: 1, writtenAt: new Date(0).toISOString(), registries: [], refusals: [] }
  return { snapshot, source: store.where }
}

export async function loadState(
  policy: ReachabilityPolicy,
  source: StateSource,
  env: NodeJS.ProcessEnv = process.env,
): Promise<LoadedState> {
  if (source.url) return fetchState(source.url)
  return readClusterState(policy, source, env)
}

/** For `mirrorhook rewrite` without a state source: the config's own list, nothing learned. */
export function configOnlyView(policy: Policy): ReachabilityView {
  return {
    status(registry) {
      return policy.unreachable.has(registry)
        ? { state: 'unreachable', evidence: 'listed in config unreachable' }
        : { state: 'unknown', evidence: 'no learned state consulted; --url or --from-cluster use what the server knows' }
    },
  }
}

export function viewFor(policy: Policy, loaded: LoadedState, now = Date.now()): ReachabilityView {
  return viewFromSnapshot(loaded.snapshot, policy, now, loaded.source)
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000))
  if (s < 120) return `${s}s ago`
  if (s < 7200) return `${Math.round(s / 60)}m ago`
  if (s < 172_800) return `${Math.round(s / 3600)}h ago`
  return `${Math.round(s / 86400)}d ago`
}

function isoSeconds(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]! + 2)))
        .join('')
        .trimEnd(),
    )
    .join('\n')
}

function describeAllowlist(m: NonNullable<StateSnapshot['mirrors']>[number], now: number): string {
  const list = m.allowlist
  if (!list) return 'none (every repository; refusals are learned)'
  const failed = list.error ? `; last read failed: ${list.error}` : ''
  if (list.patterns !== undefined && list.loadedAt) {
    const size = list.bytes === undefined ? '' : `, ${list.bytes} bytes`
    return `${list.source}: ${list.patterns} patterns${size}, loaded ${ago(now - Date.parse(list.loadedAt))}${failed}`
  }
  if (list.error) return `${list.source}: not loaded (${list.error}); every repository until it is`
  return `${list.source} (size and age: ask the server, --url)`
}

/** The operator's view: one line per registry with state, since when and the evidence. */
export function formatState(loaded: LoadedState, staticUnreachable: readonly string[], now = Date.now()): string {
  const { snapshot } = loaded
  const rows: string[][] = [['REGISTRY', 'STATE', 'SINCE', 'EXPIRES', 'EVIDENCE']]
  const listed = new Set([...staticUnreachable, ...(snapshot.static ?? [])])
  for (const name of [...listed].sort()) rows.push([name, 'unreachable', '-', 'never', 'listed in config unreachable'])
  for (const json of snapshot.registries) {
    if (listed.has(json.registry)) continue
    const r = recordFromJson(json)
    const expired = r.state !== 'unknown' && r.expiresAt !== undefined && r.expiresAt <= now
    const state = expired ? 'unknown' : r.state
    const evidence = expired
      ? `${r.state} evidence expired; last: ${describeEvidence(r)}`
      : r.decidedBy
        ? describeEvidence(r)
        : 'no evidence'
    rows.push([
      r.registry,
      state,
      `${isoSeconds(r.since)} (${ago(now - r.since)})`,
      r.expiresAt === undefined || expired ? '-' : isoSeconds(r.expiresAt),
      evidence,
    ])
  }
  const out = [rows.length > 1 ? table(rows) : 'no registry state known yet']
  const mirrors = snapshot.mirrors ?? []
  if (mirrors.length > 0) {
    const mirrorRows = [['MIRROR', 'FOR', 'HEALTH', 'REFUSALS', 'ALLOWLIST']]
    for (const m of mirrors) mirrorRows.push([m.mirror, m.for.join(',') || '-', m.health, String(m.refusals), describeAllowlist(m, now)])
    out.push('', table(mirrorRows))
  }
  const refusals = snapshot.refusals.filter((r) => Date.parse(r.expiresAt) > now)
  if (refusals.length > 0) {
    const refusalRows = [['NOT SERVED BY THE MIRROR', 'SINCE', 'COUNT', 'EVIDENCE']]
    for (const r of refusals)
      refusalRows.push([
        r.repository,
        `${r.firstAt.replace(/\.\d{3}Z$/, 'Z')} (${ago(now - Date.parse(r.firstAt))})`,
        String(r.count),
        r.detail,
      ])
    out.push('', table(refusalRows))
  }
  const remediations = snapshot.remediations ?? []
  if (remediations.length > 0) {
    const rows = [['REMEDIATED POD', 'WHEN', 'ACTION', 'RESULT', 'DETAIL']]
    for (const r of remediations)
      rows.push([
        `${r.namespace}/${r.pod}`,
        `${r.at.replace(/\.\d{3}Z$/, 'Z')} (${ago(now - Date.parse(r.at))})`,
        r.action,
        r.result,
        r.changes.length ? r.changes.map((c) => `${c.container}: ${c.from} -> ${c.to} (${c.cause})`).join('; ') : (r.reason ?? ''),
      ])
    out.push('', table(rows))
  }
  if (snapshot.prewarm !== undefined) {
    const p = snapshot.prewarm
    const registriesDown = Object.entries(p?.registries ?? {})
      .filter(([, r]) => (r.errors ?? 0) > 0)
      .map(([name, r]) => `${name}${r.down ? ` (${r.down})` : ''}`)
    out.push(
      '',
      p
        ? `last pre-warm run: ${p.result}${p.scheduledFor ? ` for ${p.scheduledFor.replace(/\.\d{3}Z$/, 'Z')}` : ''}, finished ${p.finishedAt.replace(/\.\d{3}Z$/, 'Z')} (${ago(now - Date.parse(p.finishedAt))}): ${p.workloads ?? 0} workloads, ${p.images ?? 0} images, ${p.newerTags ?? 0} newer tags${registriesDown.length ? `; registries not answering: ${registriesDown.join(', ')}` : ''}${p.error ? `; ${p.error}` : ''}`
        : 'last pre-warm run: none yet',
    )
  }
  if (snapshot.probesOffline)
    out.push('', "note: no probe target answers; probe failures are ignored until one does (check the webhook's egress)")
  out.push('', `source: ${loaded.source}, written ${snapshot.writtenAt}${snapshot.writer ? ` by ${snapshot.writer}` : ''}`)
  return `${out.join('\n')}\n`
}
