// Pre-pull metrics, registered into the server's registry.
import { Counter, Gauge, type Registry } from 'prom-client'

// Per-image series name images from Pod specs: at most this many images are exported one by one
// (mirrorhook_prepull_images{state} counts them all), so the series stay bounded.
export const MAX_IMAGE_SERIES = 100

type ImageLabels<L extends string> = Record<L, string> & { image: string }

/** A per-image gauge that exports at most `max` distinct images; the others are left out. */
export class BoundedImageGauge<L extends string> {
  private readonly series = new Map<string, Set<string>>()
  constructor(
    private readonly gauge: Gauge<L>,
    private readonly max = MAX_IMAGE_SERIES,
  ) {}

  set(labels: ImageLabels<L>, value: number): void {
    let keys = this.series.get(labels.image)
    if (!keys) {
      if (this.series.size >= this.max) return
      keys = new Set()
      this.series.set(labels.image, keys)
    }
    keys.add(JSON.stringify(labels))
    this.gauge.set(labels as never, value)
  }

  remove(labels: ImageLabels<L>): void {
    const keys = this.series.get(labels.image)
    if (!keys?.delete(JSON.stringify(labels))) return
    if (keys.size === 0) this.series.delete(labels.image)
    this.gauge.remove(labels as never)
  }

  /** Distinct images exported. */
  get images(): number {
    return this.series.size
  }
}

export class PrepullMetrics {
  readonly available: Gauge
  readonly offers: Counter<'result'>
  readonly dropped: Counter<'source'>
  readonly dryRunRefused: Counter
  readonly queueDepth: Gauge<'part'>
  readonly writes: Counter<'verb' | 'result'>
  readonly retries: Counter
  readonly images: Gauge<'state'>
  readonly imageState: BoundedImageGauge<'image' | 'state'>
  readonly imageFailedNode: BoundedImageGauge<'image' | 'node' | 'reason'>
  readonly sweeps: Counter<'result'>
  readonly inUse: Gauge
  readonly caches: Gauge
  // Managed ImageCaches and images waiting for one, read at scrape time.
  layout?: () => { caches: number; waiting: number }
  readonly waiting: Gauge
  readonly leader: Gauge
  // Read at scrape time.
  queueStats?: () => { ready: number; delayed: number; inFlight: number }

  constructor(registry: Registry) {
    const registers = [registry]
    const stats = () => this.queueStats?.()
    this.available = new Gauge({
      name: 'mirrorhook_kubefledged_available',
      help: '1 when the ImageCache API (kube-fledged CRD) answers in the configured namespace, 0 when it is missing.',
      registers,
    })
    this.offers = new Counter({
      name: 'mirrorhook_prepull_offers_total',
      help: 'Mirror references handed to pre-pull by admission, by result (queued, duplicate, dropped).',
      labelNames: ['result'],
      registers,
    })
    this.dropped = new Counter({
      name: 'mirrorhook_prepull_dropped_total',
      help: 'Images not queued because the queue was full, by source (admission, remediation, prewarm, sweep, status); the next Pod sweep recovers them.',
      labelNames: ['source'],
      registers,
    })
    this.dryRunRefused = new Counter({
      name: 'mirrorhook_prepull_dry_run_refused_total',
      help: 'Dry-run admissions that reached pre-pull and were refused (should stay 0).',
      registers,
    })
    this.queueDepth = new Gauge({
      name: 'mirrorhook_prepull_queue_depth',
      help: 'Images in the pre-pull queue, by part (ready, delayed, in_flight).',
      labelNames: ['part'],
      registers,
      collect() {
        const s = stats()
        if (!s) return
        this.set({ part: 'ready' }, s.ready)
        this.set({ part: 'delayed' }, s.delayed)
        this.set({ part: 'in_flight' }, s.inFlight)
      },
    })
    this.writes = new Counter({
      name: 'mirrorhook_prepull_api_writes_total',
      help: 'ImageCache writes sent to the API server, by verb (create, update, annotate, delete) and result.',
      labelNames: ['verb', 'result'],
      registers,
    })
    this.retries = new Counter({
      name: 'mirrorhook_prepull_retries_total',
      help: 'Writes that failed transiently (429, 5xx, no answer) and were queued again with backoff.',
      registers,
    })
    this.images = new Gauge({
      name: 'mirrorhook_prepull_images',
      help: 'Images in managed ImageCaches by state (pending, cached, failed, unknown, aborted, no-nodes, purging, purged, purge-failed).',
      labelNames: ['state'],
      registers,
    })
    this.imageState = new BoundedImageGauge(
      new Gauge({
        name: 'mirrorhook_prepull_image_state',
        help: `Per image that is not cached yet (at most ${MAX_IMAGE_SERIES} images): 1 for its state (pending, failed, unknown, aborted, no-nodes, purging, purged, purge-failed).`,
        labelNames: ['image', 'state'],
        registers,
      }),
    )
    this.imageFailedNode = new BoundedImageGauge(
      new Gauge({
        name: 'mirrorhook_prepull_image_failed_node',
        help: `Per image (at most ${MAX_IMAGE_SERIES} images) and node where kube-fledged reported a failure: 1, with its reason.`,
        labelNames: ['image', 'node', 'reason'],
        registers,
      }),
    )
    this.sweeps = new Counter({
      name: 'mirrorhook_prepull_pod_sweeps_total',
      help: 'Listings of running Pods that decide which images are in use, by result.',
      labelNames: ['result'],
      registers,
    })
    this.inUse = new Gauge({
      name: 'mirrorhook_prepull_images_in_use',
      help: 'Distinct mirror references run by Pods at the last sweep.',
      registers,
    })
    const layout = () => this.layout?.()
    this.caches = new Gauge({
      name: 'mirrorhook_prepull_imagecaches',
      help: 'Managed ImageCaches (batches of images).',
      registers,
      collect() {
        const l = layout()
        if (l) this.set(l.caches)
      },
    })
    this.waiting = new Gauge({
      name: 'mirrorhook_prepull_images_waiting',
      help: 'Images in use waiting for a new ImageCache (while kube-fledged processes another one).',
      registers,
      collect() {
        const l = layout()
        if (l) this.set(l.waiting)
      },
    })
    this.leader = new Gauge({
      name: 'mirrorhook_prepull_leader',
      help: '1 while this replica holds the pre-pull Lease and is the one that writes ImageCaches.',
      registers,
    })
  }
}
