// `mirrorhook prewarm --dry-run`: what the next pre-warm run would pull, per workload and
// container, and why. Reads the workloads, the registries' tags (and their credentials
// Secrets); writes nothing.
import type { Command } from 'commander'
import { Option } from 'commander'
import { loadConfig } from '../config/load.js'
import { DEFAULT_NAMESPACE } from '../core/config.js'
import { findKubeConfig } from '../kube/kubeconfig.js'
import { type ImageCache, imagesOf } from '../prepull/imagecache.js'
import type { KubeImageCacheApi } from '../prepull/kubeapi.js'
import { configOnlyView, loadState, type StateSource, viewFor } from '../reachability/cli.js'
import type { RegistryTally } from '../prewarm/ask.js'
import type { PlanRow } from '../prewarm/plan.js'
import type { ResolverCache } from '../prewarm/run.js'
import { CliError } from './common.js'

// Pre-pull writes batches (server/prepull/): an image's ImageCache is the managed batch whose
// cacheSpec holds it; an image no batch holds yet goes into the next new batch.
export const NEW_BATCH = '(new, batched)'

/** Image → the managed ImageCache (batch) holding it; the first one by name if two do. */
export function batchesByImage(caches: readonly ImageCache[]): Map<string, string> {
  const out = new Map<string, string>()
  const sorted = [...caches].sort((a, b) => ((a.metadata.name ?? '') < (b.metadata.name ?? '') ? -1 : 1))
  for (const cache of sorted) {
    const name = cache.metadata.name
    if (!name) continue
    for (const image of imagesOf(cache) ?? []) if (!out.has(image)) out.set(image, name)
  }
  return out
}

export interface DryRunRow {
  workload: string
  container: string
  init: boolean
  current: string
  tag: string
  // imageCache: the batch holding the reference now; null: it would go into a new batch.
  pulls: { role: string; reference: string; pull: string; decision: string; imageCache: string | null }[]
  skipped?: string
}

export function dryRunRows(rows: readonly PlanRow[], batches: ReadonlyMap<string, string> = new Map()): DryRunRow[] {
  return rows.map((r) => ({
    workload: `${r.workload.namespace}/${r.workload.kind}/${r.workload.name}`,
    container: r.workload.container,
    init: r.workload.init,
    current: r.workload.image,
    tag: r.tag,
    pulls: r.pulls.map((p) => ({ ...p, imageCache: batches.get(p.pull) ?? null })),
    ...(r.skipped ? { skipped: r.skipped } : {}),
  }))
}

// The managed ImageCaches in kube-fledged's namespace (read only); why not, when they cannot be read.
async function listBatches(api: KubeImageCacheApi): Promise<{ batches: Map<string, string>; note?: string }> {
  try {
    return { batches: batchesByImage((await api.list()).items) }
  } catch (error) {
    return {
      batches: new Map(),
      note: `note: the ImageCaches could not be listed (${(error as Error).message}): every image shown as ${NEW_BATCH}`,
    }
  }
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

export function formatDryRun(rows: readonly DryRunRow[], registries: Record<string, RegistryTally>, header: string): string {
  const out = [header]
  const lines = [['WORKLOAD', 'CONTAINER', 'CURRENT', 'TAG CHOSEN (WHY)', 'NODES PULL', 'IMAGECACHE']]
  for (const r of rows) {
    const container = r.init ? `${r.container} (init)` : r.container
    if (r.pulls.length === 0) lines.push([r.workload, container, r.current, r.tag, r.skipped ?? 'nothing to pull', '-'])
    r.pulls.forEach((p, i) =>
      lines.push(
        i === 0
          ? [r.workload, container, r.current, r.tag, `${p.role}: ${p.pull}`, p.imageCache ?? NEW_BATCH]
          : ['', '', '', '', `${p.role}: ${p.pull}`, p.imageCache ?? NEW_BATCH],
      ),
    )
  }
  out.push('', lines.length > 1 ? table(lines) : 'no workload containers found')
  const regs = Object.entries(registries)
  if (regs.length > 0) {
    const rrows = [['REGISTRY', 'REPOSITORIES', 'REQUESTS', 'NEWER', 'NO NEWER', 'ERRORS']]
    for (const [name, t] of regs)
      rrows.push([
        name,
        String(t.questions),
        String(t.requests),
        String(t.newer),
        String(t.same),
        t.down ? `${t.errors} (${t.down})` : String(t.errors),
      ])
    out.push('', table(rrows))
  }
  return `${out.join('\n')}\n`
}

async function prewarm(options: { config?: string; namespace?: string; output: string } & StateSource): Promise<void> {
  const { config, policy } = await loadConfig(options.config)
  const kube = await findKubeConfig(process.env)
  if (!kube) throw new CliError('no Kubernetes API found (in-cluster, KUBECONFIG or ~/.kube/config): pre-warm reads the workloads there')
  const reachability = options.url || options.fromCluster ? viewFor(policy, await loadState(policy, options)) : configOnlyView(policy)
  // Loaded here, not with the program: the Kubernetes client takes a third of a second to load.
  const [{ KubeImageCacheApi }, { createTagResolver }, { buildResolvers, closeResolvers, prewarmPass }, { WorkloadSource }] =
    await Promise.all([
      import('../prepull/kubeapi.js'),
      import('../prewarm/registry-api.js'),
      import('../prewarm/run.js'),
      import('../prewarm/workloads.js'),
    ])
  const workloads = new WorkloadSource(kube.kubeConfig)
  const selected = await workloads.namespaces(config.prewarm)
  const only = options.namespace
  const cache: ResolverCache = new Map()
  const resolvers = await buildResolvers(config.prewarm.registries, {
    kubeConfig: kube.kubeConfig,
    namespace: process.env.POD_NAMESPACE?.trim() || DEFAULT_NAMESPACE,
    create: createTagResolver,
    cache,
  })
  const pass = await prewarmPass({
    config,
    policy,
    reachability,
    resolvers,
    workloads: only === undefined ? workloads : { namespaces: async () => [only], images: (ns, kinds) => workloads.images(ns, kinds) },
  }).finally(() => closeResolvers(cache))
  const listed = await listBatches(new KubeImageCacheApi(kube.kubeConfig, config.kubeFledged.namespace))
  const rows = dryRunRows(pass.rows, listed.batches)
  const registries = Object.fromEntries(pass.asked.registries)
  if (options.output === 'json') {
    process.stdout.write(
      `${JSON.stringify({ namespaces: pass.namespaces, workloads: pass.workloads, rows, registries, images: pass.entries }, null, 2)}\n`,
    )
    return
  }
  const notes = [
    `dry run: nothing is written. ${pass.namespaces.length} namespace(s) [${pass.namespaces.join(', ')}], ${pass.workloads} workload(s), ${pass.images.length} container(s), ${pass.entries.length} image(s) to pull`,
  ]
  if (only !== undefined && !selected.includes(only))
    notes.push(`note: ${only} is not among the namespaces pre-warm selects [${selected.join(', ')}]`)
  if (!config.prewarm.enabled) notes.push('note: prewarm.enabled is false: the server does not run it')
  if (listed.note) notes.push(listed.note)
  process.stdout.write(formatDryRun(rows, registries, notes.join('\n')))
}

export function registerPrewarm(program: Command): void {
  program
    .command('prewarm')
    .description(
      'show what the next pre-warm run would pull: per workload and container, the tag chosen and why, the reference and the ImageCache (batch) holding it',
    )
    .requiredOption('--dry-run', 'required: print the plan, write nothing (the runs themselves happen in `mirrorhook serve`)')
    .option('-n, --namespace <namespace>', 'only this namespace')
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option('--url <url>', 'decide with the learned state of a running server (its metrics listener, e.g. http://127.0.0.1:9090)')
    .option('--from-cluster', 'decide with the learned state kept in the cluster (the ConfigMap)')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'))
    .action(async (opts) =>
      prewarm({ config: opts.config, namespace: opts.namespace, output: opts.output, url: opts.url, fromCluster: opts.fromCluster }),
    )
}
