// The tag resolution interface pre-warm uses (per registry: the schema of its entry in
// `prewarm.registries`, and one resolver that finds the newest tag of a repository).
// The implementations (OCI distribution, Harbor) live in server/prewarm/registry/.
import type { Logger } from 'pino'
import { z } from 'zod'

const regexList = z.array(
  z.string().refine((s) => {
    try {
      new RegExp(s)
      return true
    } catch {
      return false
    }
  }, 'must be a valid regular expression'),
)

export const registryEntrySchema = z
  .object({
    api: z.enum(['oci', 'harbor']),
    order: z.enum(['semver', 'build-time', 'push-time']),
    include: regexList.optional(),
    exclude: regexList.default(['^latest$']),
    caFile: z.string().trim().min(1).optional(),
    credentialsSecret: z.string().trim().min(1).optional(),
    prerelease: z.boolean().optional(),
    maxTagsPerRepository: z.number().int().positive().optional(),
    requestsPerSecond: z.number().positive().optional(),
    platform: z.string().trim().min(1).optional(),
  })
  .strict()

export type RegistryEntry = z.infer<typeof registryEntrySchema>

export interface TagChoice {
  tag: string
  order: RegistryEntry['order']
  evidence: string
}

export interface Resolution {
  newest?: TagChoice
  reason: string
  requests: number
}

export interface TagResolver {
  newest(repository: string, currentTag: string | undefined): Promise<Resolution>
}

export interface RegistryMetrics {
  registryRequest(host: string, outcome: string): void
}

export interface TagResolverDeps {
  dockerConfigJson?: string
  caPem?: string
  logger?: Logger
  metrics?: RegistryMetrics
  now?: () => number
}

export type CreateTagResolver = (host: string, entry: RegistryEntry, deps: TagResolverDeps) => TagResolver & { close?(): void }

export const createTagResolver: CreateTagResolver = (host) => ({
  newest: async () => {
    throw new Error(`no tag resolver is built in for ${host}`)
  },
})
