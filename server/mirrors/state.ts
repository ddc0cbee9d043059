// Each configured mirror as `mirrorhook state` shows it: its host's health, its allowlist and
// the repositories it refused.
import { z } from 'zod'
import { type Policy, registryKey } from '../core/policy.js'
import type { ReachabilityView } from '../core/rewrite.js'
import type { AllowlistStatus } from './allowlists.js'

export const mirrorStateSchema = z.object({
  mirror: z.string(),
  // The source registries it is configured for (host mode), and `prefix` for any eligible one.
  for: z.array(z.string()),
  health: z.enum(['reachable', 'unreachable', 'slow', 'unknown']),
  evidence: z.string(),
  allowlist: z
    .object({
      source: z.string(),
      patterns: z.number().int().optional(),
      bytes: z.number().int().optional(),
      ignoredLines: z.number().int().optional(),
      loadedAt: z.string().optional(),
      checkedAt: z.string().optional(),
      error: z.string().optional(),
    })
    .optional(),
  // Repositories it refused (learned), still remembered.
  refusals: z.number().int().min(0),
})

export type MirrorState = z.infer<typeof mirrorStateSchema>

export function mirrorStates(
  policy: Policy,
  view: ReachabilityView,
  refusals: readonly { repository: string; expiresAt: string }[],
  allowlists: readonly AllowlistStatus[] | undefined,
  now: number,
): MirrorState[] {
  return policy.mirrors.map((m) => {
    const status = view.status(registryKey(m.domain))
    const source = policy.allowlists.get(m.repoPrefix)
    const loaded = allowlists?.find((a) => a.mirrors.includes(m.repoPrefix))
    const serves = [...policy.hosts].filter(([, targets]) => targets.includes(m)).map(([registry]) => registry)
    if (policy.prefix.includes(m)) serves.push('prefix')
    const { mirrors: _mirrors, ...list } = loaded ?? { mirrors: [], source }
    return {
      mirror: m.repoPrefix,
      for: serves,
      health: status.state,
      evidence: status.evidence,
      allowlist: source === undefined ? undefined : { ...list, source },
      refusals: refusals.filter((r) => r.repository.startsWith(`${m.repoPrefix}/`) && Date.parse(r.expiresAt) > now).length,
    }
  })
}
