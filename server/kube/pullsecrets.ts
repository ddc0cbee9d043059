// Copies of the mirrors' pull Secrets in the opted-in namespaces. A Pod can only use a pull
// Secret of its own namespace, so each mirror Secret (mirror.pullSecrets, kept in mirrorhook's
// namespace) is copied, under the same name and labelled as mirrorhook's, into every namespace
// that opts in, kept equal to its source, and deleted when the namespace opts out. Admission
// reads only `has()`: a namespace gets rewrites to a credentialed mirror once its copy exists.
// Off the admission path: one worker, one request at a time.
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node'
import type { Logger } from 'pino'
import { apiClient } from './client.js'
import { apiErrorOf } from './errors.js'
import type { OptedInNamespaces } from './namespaces.js'
import type { PullSecretView } from '../core/pullrules.js'

export const COPY_LABEL = 'mirrorhook.io/pull-secret-copy'
export const SOURCE_ANNOTATION = 'mirrorhook.io/pull-secret-source'
// Every this many source checks, each copy is read again (a copy deleted by hand comes back).
export const FULL_PASS_EVERY = 10

export interface PullSecretCopiesOptions {
  kubeConfig: KubeConfig
  namespaces: OptedInNamespaces
  // mirrorhook's own namespace, where the source Secrets are.
  sourceNamespace: string
  names: readonly string[]
  // Never written to (admission does not mutate there).
  excludedNamespaces: ReadonlySet<string>
  // Namespaces that get a copy whether or not they opted in (kube-fledged's, where its pull Jobs run).
  alsoIn?: readonly string[]
  resyncMs: number
  logger: Logger
}

type Core = Pick<CoreV1Api, 'readNamespacedSecret' | 'createNamespacedSecret' | 'replaceNamespacedSecret' | 'deleteNamespacedSecret'>

function sameContent(a: V1Secret, b: V1Secret): boolean {
  return a.type === b.type && JSON.stringify(a.data ?? {}) === JSON.stringify(b.data ?? {})
}

function isOurs(secret: V1Secret): boolean {
  return secret.metadata?.labels?.[COPY_LABEL] === 'true'
}

export class PullSecretCopies implements PullSecretView {
  private readonly core: Core
  private readonly ready = new Set<string>()
  private readonly sources = new Map<string, V1Secret>()
  private readonly pending = new Set<string>()
  private readonly removals = new Set<string>()
  // Namespaces whose copy failed: tried again at the next source check.
  private readonly failed = new Set<string>()
  private worker?: Promise<void>
  private timer?: NodeJS.Timeout
  private passes = 0
  private stopped = false
  private unsubscribe?: () => void
  private readonly logger: Logger

  constructor(
    private readonly options: PullSecretCopiesOptions,
    core?: Core,
  ) {
    this.core = core ?? apiClient(options.kubeConfig, CoreV1Api)
    this.logger = options.logger.child({ component: 'pull-secrets' })
  }

  has(namespace: string, name: string): boolean {
    return this.ready.has(`${namespace}/${name}`)
  }

  /** The namespaces that have a copy of `name`, for state and tests. */
  copies(name: string): string[] {
    return [...this.ready]
      .filter((k) => k.endsWith(`/${name}`))
      .map((k) => k.slice(0, -name.length - 1))
      .sort()
  }

  start(): void {
    this.unsubscribe = this.options.namespaces.subscribe({
      add: (ns) => this.enqueue(ns),
      delete: (ns) => {
        if (this.wanted(ns)) return
        this.pending.delete(ns)
        this.removals.add(ns)
        for (const name of this.options.names) this.ready.delete(`${ns}/${name}`)
        this.kick()
      },
    })
    void this.resync()
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.unsubscribe?.()
    clearTimeout(this.timer)
    await this.worker
  }

  /** Resolves when nothing is left to do (tests). */
  async idle(): Promise<void> {
    while (this.worker) await this.worker
  }

  // Kept without opting in.
  private wanted(namespace: string): boolean {
    return this.options.alsoIn?.includes(namespace) ?? false
  }

  private targets(): string[] {
    return [...new Set([...this.options.namespaces.names(), ...(this.options.alsoIn ?? [])])]
  }

  private enqueue(namespace: string): void {
    if (this.options.excludedNamespaces.has(namespace) && namespace !== this.options.sourceNamespace) return
    this.removals.delete(namespace)
    this.pending.add(namespace)
    this.kick()
  }

  private kick(): void {
    if (this.worker || this.stopped) return
    this.worker = this.drain().finally(() => {
      this.worker = undefined
      if ((this.pending.size > 0 || this.removals.size > 0) && !this.stopped) this.kick()
    })
  }

  private async drain(): Promise<void> {
    while (!this.stopped) {
      const removal = this.removals.values().next()
      if (!removal.done) {
        this.removals.delete(removal.value)
        await this.remove(removal.value)
        continue
      }
      const next = this.pending.values().next()
      if (next.done) return
      this.pending.delete(next.value)
      await this.ensure(next.value)
    }
  }

  // Reads the sources; a changed source, or every FULL_PASS_EVERY rounds, looks at every copy.
  private async resync(): Promise<void> {
    if (this.stopped) return
    let changed = this.passes % FULL_PASS_EVERY === 0
    this.passes += 1
    for (const name of this.options.names) {
      try {
        const source = await this.core.readNamespacedSecret({ name, namespace: this.options.sourceNamespace })
        const before = this.sources.get(name)
        if (!before || !sameContent(before, source)) changed = true
        this.sources.set(name, source)
      } catch (error) {
        const e = apiErrorOf(error, `read pull Secret ${this.options.sourceNamespace}/${name}`)
        if (e.status === 404) {
          // Without its source no namespace is said to have it: rewrites to that mirror stop.
          this.sources.delete(name)
          for (const k of [...this.ready]) if (k.endsWith(`/${name}`)) this.ready.delete(k)
          this.logger.error(
            { secret: `${this.options.sourceNamespace}/${name}` },
            'mirror pull Secret not found: its mirror gets no rewrites',
          )
        } else {
          this.logger.warn({ err: e.message }, 'cannot read a mirror pull Secret; trying again later')
        }
      }
    }
    if (changed) for (const ns of this.targets()) this.enqueue(ns)
    for (const ns of this.failed) if (this.options.namespaces.has(ns) || this.wanted(ns)) this.enqueue(ns)
    this.failed.clear()
    if (!this.stopped) {
      this.timer = setTimeout(() => void this.resync(), this.options.resyncMs)
      this.timer.unref?.()
    }
  }

  private async ensure(namespace: string): Promise<void> {
    for (const name of this.options.names) {
      const source = this.sources.get(name)
      if (!source) continue
      const key = `${namespace}/${name}`
      if (namespace === this.options.sourceNamespace) {
        this.ready.add(key)
        continue
      }
      const body: V1Secret = {
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: {
          name,
          namespace,
          labels: { [COPY_LABEL]: 'true', 'app.kubernetes.io/managed-by': 'mirrorhook' },
          annotations: { [SOURCE_ANNOTATION]: `${this.options.sourceNamespace}/${name}` },
        },
        type: source.type,
        data: source.data,
      }
      try {
        let existing: V1Secret | undefined
        try {
          existing = await this.core.readNamespacedSecret({ name, namespace })
        } catch (error) {
          if (apiErrorOf(error, 'read').status !== 404) throw error
        }
        if (!existing) {
          await this.core.createNamespacedSecret({ namespace, body })
          this.logger.info({ namespace, secret: name }, 'copied the mirror pull Secret')
        } else if (!isOurs(existing)) {
          // Someone else's Secret of that name: used as it is, never overwritten.
          this.logger.warn(
            { namespace, secret: name },
            'a Secret of the mirror pull Secret name exists and is not mirrorhook copy; left as is',
          )
        } else if (!sameContent(existing, source)) {
          body.metadata!.resourceVersion = existing.metadata?.resourceVersion
          await this.core.replaceNamespacedSecret({ name, namespace, body })
          this.logger.info({ namespace, secret: name }, 'updated the copy of the mirror pull Secret')
        }
        // Opted out meanwhile: not ready, and the removal queued behind this will delete it.
        if (this.options.namespaces.has(namespace) || this.wanted(namespace)) this.ready.add(key)
      } catch (error) {
        const e = apiErrorOf(error, `copy pull Secret ${name} to ${namespace}`)
        this.ready.delete(key)
        this.failed.add(namespace)
        this.logger.warn(
          { namespace, secret: name, err: e.message },
          'cannot copy the mirror pull Secret; its mirror gets no rewrites there',
        )
      }
    }
  }

  private async remove(namespace: string): Promise<void> {
    if (namespace === this.options.sourceNamespace) return
    for (const name of this.options.names) {
      try {
        const existing = await this.core.readNamespacedSecret({ name, namespace })
        if (!isOurs(existing)) continue
        await this.core.deleteNamespacedSecret({ name, namespace, body: { preconditions: { uid: existing.metadata?.uid } } })
        this.logger.info({ namespace, secret: name }, 'namespace opted out: deleted the copy of the mirror pull Secret')
      } catch (error) {
        const e = apiErrorOf(error, `delete pull Secret ${name} in ${namespace}`)
        if (e.status !== 404)
          this.logger.warn({ namespace, secret: name, err: e.message }, 'cannot delete the copy of the mirror pull Secret')
      }
    }
  }
}
