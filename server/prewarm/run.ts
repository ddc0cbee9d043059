// One pre-warm pass, shared by the scheduled run and `mirrorhook prewarm --dry-run`: read the
// workloads, ask the configured registries, plan the pulls. Nothing here writes anything.
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import type { Config } from '../config/config.js'
import type { Policy } from '../core/policy.js'
import type { PullSecretView } from '../core/pullrules.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { apiClient } from '../kube/client.js'
import { statusOf } from '../kube/errors.js'
import { askRegistries, type Asked } from './ask.js'
import type { WorkloadImage } from './collect.js'
import type { PrewarmConfig, WorkloadKind } from './config.js'
import { entriesOf, planRows, type PlanRow, type PrewarmEntry, questionsFor, registryTable } from './plan.js'
import type { CreateTagResolver, RegistryMetrics, TagResolver } from './registry-api.js'

export interface WorkloadReader {
  namespaces(config: Pick<PrewarmConfig, 'namespaces' | 'namespaceSelector'>, only?: string): Promise<string[]>
  images(namespaces: readonly string[], kinds: readonly WorkloadKind[]): Promise<{ images: WorkloadImage[]; workloads: number }>
}

export interface PassInput {
  config: Config
  policy: Policy
  reachability: ReachabilityView
  workloads: WorkloadReader
  resolvers: ReadonlyMap<string, TagResolver>
  // Only this namespace (of the configured ones).
  only?: string
  // The mirror pull Secrets' copies, as admission sees them.
  secrets?: PullSecretView
}

export interface Pass {
  namespaces: string[]
  workloads: number
  images: WorkloadImage[]
  asked: Asked
  rows: PlanRow[]
  entries: PrewarmEntry[]
}

export async function prewarmPass(input: PassInput): Promise<Pass> {
  const c = input.config.prewarm
  const namespaces = await input.workloads.namespaces(c, input.only)
  const { images, workloads } = await input.workloads.images(namespaces, c.kinds)
  const table = registryTable(c.registries)
  const asked = await askRegistries(questionsFor(images, table), input.resolvers, c.concurrency)
  const rows = planRows(images, {
    current: c.current,
    policy: input.policy,
    reachability: input.reachability,
    table,
    answers: asked.answers,
  })
  return { namespaces, workloads, images, asked, rows, entries: entriesOf(rows) }
}

// A resolver that only fails, for a registry whose CA or credentials cannot be read: counted and
// logged like a registry that does not answer.
const failing = (message: string): TagResolver => ({ newest: () => Promise.reject(new Error(message)) })

type Resolver = TagResolver & { close?(): void }

/** Resolvers kept from run to run (their caches, e.g. image configs by digest, stay) while CA and credentials are the same. */
export type ResolverCache = Map<string, { key: string; resolver: Resolver }>

export function closeResolvers(cache: ResolverCache): void {
  for (const { resolver } of cache.values()) resolver.close?.()
  cache.clear()
}

/**
 * One resolver per configured registry, with its CA file and the `.dockerconfigjson` of its
 * credentials Secret (in mirrorhook's namespace), read now so that rotated ones are used.
 */
export async function buildResolvers(
  registries: PrewarmConfig['registries'],
  deps: {
    kubeConfig?: KubeConfig
    namespace: string
    create: CreateTagResolver
    logger?: Logger
    metrics?: RegistryMetrics
    now?: () => number
    cache?: ResolverCache
  },
): Promise<Map<string, TagResolver>> {
  const out = new Map<string, TagResolver>()
  let core: CoreV1Api | undefined
  for (const [host, entry] of Object.entries(registries)) {
    let caPem: string | undefined
    let dockerConfigJson: string | undefined
    try {
      if (entry.caFile) {
        try {
          caPem = await readFile(entry.caFile, 'utf8')
        } catch (error) {
          throw new Error(`cannot read caFile ${entry.caFile}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
            cause: error,
          })
        }
      }
      if (entry.credentialsSecret) {
        const where = `Secret ${deps.namespace}/${entry.credentialsSecret}`
        if (!deps.kubeConfig) throw new Error(`cannot read ${where}: no Kubernetes API`)
        core ??= apiClient(deps.kubeConfig, CoreV1Api)
        let data: Record<string, string> | undefined
        try {
          data = (await core.readNamespacedSecret({ name: entry.credentialsSecret, namespace: deps.namespace })).data
        } catch (error) {
          throw new Error(`cannot read ${where}: ${statusOf(error) ? `HTTP ${statusOf(error)}` : (error as Error).message}`, {
            cause: error,
          })
        }
        const encoded = data?.['.dockerconfigjson']
        if (!encoded) throw new Error(`${where} has no .dockerconfigjson (type kubernetes.io/dockerconfigjson)`)
        dockerConfigJson = Buffer.from(encoded, 'base64').toString('utf8')
      }
      const key = createHash('sha256')
        .update(JSON.stringify([entry, caPem ?? null, dockerConfigJson ?? null]))
        .digest('hex')
      const kept = deps.cache?.get(host)
      if (kept?.key === key) {
        out.set(host, kept.resolver)
        continue
      }
      kept?.resolver.close?.()
      const resolver = deps.create(host, entry, { caPem, dockerConfigJson, logger: deps.logger, metrics: deps.metrics, now: deps.now })
      deps.cache?.set(host, { key, resolver })
      out.set(host, resolver)
    } catch (error) {
      out.set(host, failing((error as Error).message))
    }
  }
  return out
}
