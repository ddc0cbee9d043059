// The `prewarm` configuration section: which workloads' images are pulled onto the nodes ahead
// of need, on a schedule, with the newest tag of each from the registries named here.
import { z } from 'zod'
import { registryEntrySchema } from './registry-api.js'
import { checkSchedule } from './schedule.js'

const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
// A registry host as it appears in an image reference, with an optional port.
const REGISTRY_HOST = /^(\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)(:[0-9]{1,5})?$/

export const WORKLOAD_KINDS = ['Deployments', 'StatefulSets', 'DaemonSets', 'CronJobs'] as const
export type WorkloadKind = (typeof WORKLOAD_KINDS)[number]

export const PREWARM_DEFAULTS = {
  enabled: false,
  schedule: '30 2 * * *',
  timeZone: 'UTC',
  current: true,
  lease: 'mirrorhook-prewarm',
  leaseDurationSeconds: 60,
  concurrency: 4,
} as const

const labelSelectorSchema = z
  .object({
    matchLabels: z
      .record(z.string().regex(LABEL_KEY, 'must be a label key'), z.string().regex(LABEL_VALUE, 'must be a label value'))
      .optional(),
    matchExpressions: z
      .array(
        z
          .object({
            key: z.string().regex(LABEL_KEY, 'must be a label key'),
            operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
            values: z.array(z.string().regex(LABEL_VALUE, 'must be a label value')).optional(),
          })
          .strict()
          .superRefine((e, ctx) => {
            const needsValues = e.operator === 'In' || e.operator === 'NotIn'
            if (needsValues && !e.values?.length) ctx.addIssue({ code: 'custom', path: ['values'], message: `${e.operator} needs values` })
            if (!needsValues && e.values?.length)
              ctx.addIssue({ code: 'custom', path: ['values'], message: `${e.operator} takes no values` })
          }),
      )
      .optional(),
  })
  .strict()

export type LabelSelector = z.infer<typeof labelSelectorSchema>

export const prewarmSchema = z
  .object({
    // Off by default: pre-warm pulls images onto every node, which costs disk and pulls.
    enabled: z.boolean().default(PREWARM_DEFAULTS.enabled),
    // Cron, five fields (minute hour day-of-month month day-of-week), in `timeZone`.
    schedule: z
      .string()
      .trim()
      .default(PREWARM_DEFAULTS.schedule)
      .superRefine((s, ctx) => {
        const problem = checkSchedule(s)
        if (problem) ctx.addIssue({ code: 'custom', message: problem })
      }),
    // An IANA time zone name, e.g. Asia/Shanghai.
    timeZone: z
      .string()
      .trim()
      .default(PREWARM_DEFAULTS.timeZone)
      .refine((tz) => {
        try {
          new Intl.DateTimeFormat('en-US', { timeZone: tz })
          return true
        } catch {
          return false
        }
      }, 'must be an IANA time zone name such as Asia/Shanghai or UTC'),
    // The namespaces whose workloads are warmed: this list and/or those the selector matches.
    namespaces: z.array(z.string().trim().regex(DNS_LABEL, 'must be a namespace name')).default([]),
    namespaceSelector: labelSelectorSchema.optional(),
    kinds: z
      .array(z.enum(WORKLOAD_KINDS))
      .min(1, 'name at least one workload kind')
      .default([...WORKLOAD_KINDS]),
    // Warm the images the workloads run now, not only the newest tags.
    current: z.boolean().default(PREWARM_DEFAULTS.current),
    // Registries asked for the newest tag; no other host is ever queried.
    registries: z
      .record(z.string(), registryEntrySchema)
      .default({})
      .superRefine((registries, ctx) => {
        for (const host of Object.keys(registries)) {
          if (!REGISTRY_HOST.test(host))
            ctx.addIssue({ code: 'custom', path: [host], message: 'must be a registry host, with an optional port' })
        }
      }),
    // The Lease (in mirrorhook's namespace) that makes one replica run each scheduled time and records the last one.
    lease: z.string().trim().max(253).regex(DNS_SUBDOMAIN, 'must be a Lease name').default(PREWARM_DEFAULTS.lease),
    leaseDurationSeconds: z.number().int().min(5).max(3600).default(PREWARM_DEFAULTS.leaseDurationSeconds),
    // Repositories resolved at the same time.
    concurrency: z.number().int().positive().max(64).default(PREWARM_DEFAULTS.concurrency),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.enabled && c.namespaces.length === 0 && !c.namespaceSelector) {
      ctx.addIssue({ code: 'custom', path: ['namespaces'], message: 'name the namespaces to warm (namespaces and/or namespaceSelector)' })
    }
  })

export type PrewarmConfig = z.infer<typeof prewarmSchema>
export type PrewarmConfigInput = z.input<typeof prewarmSchema>

/** The selector as the API's labelSelector query parameter. */
export function selectorString(selector: LabelSelector): string {
  const parts: string[] = []
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) parts.push(`${k}=${v}`)
  for (const e of selector.matchExpressions ?? []) {
    if (e.operator === 'In') parts.push(`${e.key} in (${(e.values ?? []).join(',')})`)
    else if (e.operator === 'NotIn') parts.push(`${e.key} notin (${(e.values ?? []).join(',')})`)
    else if (e.operator === 'Exists') parts.push(e.key)
    else parts.push(`!${e.key}`)
  }
  return parts.join(',')
}
