// The tag resolution interface pre-warm uses (per registry: the schema of its entry in
// `prewarm.registries`, and one resolver that finds the newest tag of a repository); the
// implementations (OCI distribution, Harbor) are in server/prewarm/registry/.
import type { RegistryEntry, TagResolver, TagResolverDeps } from './registry/index.js'

export { createTagResolver, registryEntrySchema } from './registry/index.js'
export type { RegistryEntry, RegistryMetrics, Resolution, TagChoice, TagResolver, TagResolverDeps } from './registry/index.js'

export type CreateTagResolver = (host: string, entry: RegistryEntry, deps: TagResolverDeps) => TagResolver & { close?(): void }
