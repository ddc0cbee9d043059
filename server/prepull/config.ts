// The `kubeFledged` configuration section: where and how ImageCaches are written.
import { z } from 'zod'
import { nodeRefreshSchema } from './nodes.js'

// Label keys and values as the API server validates them (a nodeSelector is a label match).
const LABEL_KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/

export const KUBE_FLEDGED_DEFAULTS = {
  enabled: true,
  namespace: 'kube-fledged',
  imagePullSecrets: [] as string[],
  dedupeSeconds: 600,
  writesPerSecond: 5,
  writeBurst: 10,
  queueSize: 10_000,
  batchSize: 50,
  unusedPurgeSeconds: 7 * 24 * 3600,
  podSweepSeconds: 300,
  refreshBackoffSeconds: 60,
  refreshBackoffMaxSeconds: 3600,
  crdPollSeconds: 30,
  imagesPerCache: 100,
  batchWaitSeconds: 600,
  lease: 'mirrorhook-prepull',
  leaseDurationSeconds: 15,
} as const

export const kubeFledgedSchema = z
  .object({
    enabled: z.boolean().default(KUBE_FLEDGED_DEFAULTS.enabled),
    // Where ImageCaches are created (kube-fledged watches its own namespace).
    namespace: z.string().trim().regex(DNS_LABEL, 'must be a namespace name').default(KUBE_FLEDGED_DEFAULTS.namespace),
    // Nodes that get the images; absent means every node.
    nodeSelector: z
      .record(z.string().regex(LABEL_KEY, 'must be a label key'), z.string().regex(LABEL_VALUE, 'must be a label value'))
      .optional(),
    // New nodes and images the kubelet removed: refreshes of the caches a node should hold (server/prepull/nodes.ts).
    nodes: nodeRefreshSchema.prefault({}),
    // Secrets in `namespace` used to pull from the mirror.
    imagePullSecrets: z.array(z.string().trim().max(253).regex(DNS_SUBDOMAIN, 'must be a Secret name')).default([]),
    // An image already ensured is not looked at again for this long.
    dedupeSeconds: z.number().nonnegative().max(86_400).default(KUBE_FLEDGED_DEFAULTS.dedupeSeconds),
    // API writes (create, patch, delete) per second, and the burst above that rate.
    writesPerSecond: z.number().positive().max(10_000).default(KUBE_FLEDGED_DEFAULTS.writesPerSecond),
    writeBurst: z.number().int().positive().max(10_000).default(KUBE_FLEDGED_DEFAULTS.writeBurst),
    // Images waiting to be written; past this, new ones are dropped and counted.
    queueSize: z.number().int().positive().max(1_000_000).default(KUBE_FLEDGED_DEFAULTS.queueSize),
    // Images taken off the queue per round.
    batchSize: z.number().int().positive().max(10_000).default(KUBE_FLEDGED_DEFAULTS.batchSize),
    // Caches of images no Pod has used for this long are purged from the nodes, then deleted; 0 never purges.
    unusedPurgeSeconds: z.number().nonnegative().default(KUBE_FLEDGED_DEFAULTS.unusedPurgeSeconds),
    // How often running Pods are listed to learn which images are in use.
    podSweepSeconds: z.number().positive().max(86_400).default(KUBE_FLEDGED_DEFAULTS.podSweepSeconds),
    // First wait before asking kube-fledged to retry a failed cache; doubles up to the maximum.
    refreshBackoffSeconds: z.number().positive().default(KUBE_FLEDGED_DEFAULTS.refreshBackoffSeconds),
    refreshBackoffMaxSeconds: z.number().positive().default(KUBE_FLEDGED_DEFAULTS.refreshBackoffMaxSeconds),
    // How often to look again for the ImageCache CRD while kube-fledged is missing.
    crdPollSeconds: z.number().positive().max(3600).default(KUBE_FLEDGED_DEFAULTS.crdPollSeconds),
    // Images per ImageCache: new images go into a new cache of at most this many (see the README for the choice).
    imagesPerCache: z.number().int().positive().max(1_000).default(KUBE_FLEDGED_DEFAULTS.imagesPerCache),
    // A new ImageCache waits for the one kube-fledged is processing, but at most this long.
    batchWaitSeconds: z.number().nonnegative().max(86_400).default(KUBE_FLEDGED_DEFAULTS.batchWaitSeconds),
    // The coordination.k8s.io Lease (in `namespace`) that makes one replica the only writer of ImageCaches.
    lease: z.string().trim().max(253).regex(DNS_SUBDOMAIN, 'must be a Lease name').default(KUBE_FLEDGED_DEFAULTS.lease),
    leaseDurationSeconds: z.number().int().min(2).max(3600).default(KUBE_FLEDGED_DEFAULTS.leaseDurationSeconds),
  })
  .strict()

export type KubeFledgedConfig = z.infer<typeof kubeFledgedSchema>
export type KubeFledgedConfigInput = z.input<typeof kubeFledgedSchema>
