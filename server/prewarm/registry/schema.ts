// One entry of `prewarm.registries`: how to find the newest tag of an image in one registry.
import { z } from 'zod'

/** A regex source that compiles (tags are matched against it with `RegExp.test`). */
const regexSource = z
  .string()
  .min(1)
  .max(512)
  .refine(
    (s) => {
      try {
        new RegExp(s)
        return true
      } catch {
        return false
      }
    },
    { message: 'must be a valid regular expression' },
  )

const PLATFORM = /^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/

export const REGISTRY_ENTRY_DEFAULTS = {
  exclude: ['^latest$'],
  maxTagsPerRepository: 100,
  requestsPerSecond: 10,
  platform: 'linux/amd64',
} as const

export const registryEntrySchema = z
  .object({
    // Which API lists the tags: the OCI distribution API (`/v2/<name>/tags/list`) or Harbor v2's artifacts API.
    api: z.enum(['oci', 'harbor']),
    // semver: tags that parse as versions; build-time: the image config's `created`; push-time: Harbor's push time.
    order: z.enum(['semver', 'build-time', 'push-time']),
    // Tags must match one of these (when given) and none of `exclude`.
    include: z.array(regexSource).max(64).optional(),
    exclude: z
      .array(regexSource)
      .max(64)
      .default([...REGISTRY_ENTRY_DEFAULTS.exclude]),
    // PEM bundle trusted for this registry (besides the system's).
    caFile: z.string().min(1).optional(),
    // A `kubernetes.io/dockerconfigjson` Secret in mirrorhook's namespace holding this registry's credentials.
    credentialsSecret: z.string().max(253).regex(DNS_SUBDOMAIN, 'must be a Secret name').optional(),
    // semver order: also consider pre-releases (`1.2.0-rc.1`, and suffixes such as `1.25-alpine`).
    prerelease: z.boolean().optional(),
    // Manifests read per repository per run for build-time order (the current tag's is read besides).
    maxTagsPerRepository: z.number().int().min(1).max(10_000).optional(),
    // Requests per second to this registry (token requests included).
    requestsPerSecond: z.number().positive().max(1_000).optional(),
    // The platform whose image config is read from a multi-arch index (os/architecture[/variant]).
    platform: z.string().regex(PLATFORM, 'must be os/architecture or os/architecture/variant, e.g. linux/amd64').optional(),
  })
  .strict()
  .superRefine((entry, ctx) => {
    if (entry.order === 'push-time' && entry.api !== 'harbor') {
      ctx.addIssue({ code: 'custom', path: ['order'], message: 'push-time needs api: harbor (the OCI API keeps no push time)' })
    }
  })

export type RegistryEntry = z.infer<typeof registryEntrySchema>
