// New nodes and collected images: the pure decisions by tables, then the shell with a manual clock.
import t from 'tap'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { V1Node } from '@kubernetes/client-node'
import { ManualClock } from '../support/clock.js'
import { ApiError } from '../../server/kube/errors.js'
import { type NodeChange, type NodeView, slimNode, viewOfNode } from '../../server/kube/nodes.js'
import { type ImageCache, PURGE_ANNOTATION, REFRESH_ANNOTATION, UNUSED_SINCE_ANNOTATION } from '../../server/prepull/imagecache.js'
import {
  burstDueAt,
  type CacheSummary,
  type ChooseCaches,
  chooseRefreshes,
  mergeSignals,
  nodeRefreshSchema,
  NodeRefresher,
  type NodeSignal,
  refreshChosen,
  type RefreshOutcome,
  selectorMatches,
  signalOf,
  summaryOf,
  type Waiting,
} from '../../server/prepull/nodes.js'

const logger = pino({ level: 'silent' })
const NGINX = 'm.daocloud.io/docker.io/library/nginx:1.27'
const REDIS = 'm.daocloud.io/docker.io/library/redis:7'

function node(name: string, o: { ready?: boolean; labels?: Record<string, string>; images?: string[][] } = {}): NodeView {
  const images = o.images ?? []
  return { name, labels: o.labels ?? {}, ready: o.ready ?? true, imageCount: images.length, images: images.flat() }
}

t.test('slimNode keeps the name, labels, Ready condition and image names; viewOfNode reads them', async (t) => {
  const full: V1Node = {
    metadata: { name: 'n1', uid: 'u1', resourceVersion: '7', labels: { pool: 'a' }, annotations: { big: 'x'.repeat(1000) } },
    spec: { podCIDR: '10.0.0.0/24' },
    status: {
      conditions: [
        { type: 'MemoryPressure', status: 'False' },
        { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
      ],
      images: [
        { names: [`${NGINX}`, 'm.daocloud.io/docker.io/library/nginx@sha256:abc'], sizeBytes: 100 },
        { names: [REDIS], sizeBytes: 50 },
      ],
      nodeInfo: { kubeletVersion: 'v1.35.8' } as never,
    },
  }
  const slim = slimNode(full)
  t.strictSame(slim, {
    metadata: { name: 'n1', uid: 'u1', resourceVersion: '7', labels: { pool: 'a' } },
    status: {
      conditions: [{ type: 'Ready', status: 'True' }],
      images: [{ names: [NGINX, 'm.daocloud.io/docker.io/library/nginx@sha256:abc'] }, { names: [REDIS] }],
    },
  })
  t.strictSame(viewOfNode(slim), {
    name: 'n1',
    labels: { pool: 'a' },
    ready: true,
    imageCount: 2,
    images: [NGINX, 'm.daocloud.io/docker.io/library/nginx@sha256:abc', REDIS],
  })
  const cases: [string, V1Node, boolean][] = [
    ['Ready False', { metadata: { name: 'n' }, status: { conditions: [{ type: 'Ready', status: 'False' }] } }, false],
    ['Ready Unknown', { metadata: { name: 'n' }, status: { conditions: [{ type: 'Ready', status: 'Unknown' }] } }, false],
    ['no Ready condition', { metadata: { name: 'n' }, status: { conditions: [{ type: 'DiskPressure', status: 'True' }] } }, false],
    ['no status', { metadata: { name: 'n' } }, false],
  ]
  for (const [name, n, ready] of cases) t.equal(viewOfNode(slimNode(n)).ready, ready, name)
})

t.test('signalOf: Ready transitions, lost images, the list cap', async (t) => {
  const cap = 3
  const cases: [string, NodeChange, NodeSignal | undefined][] = [
    ['listed at start, Ready: the baseline', { next: node('a'), listed: true }, undefined],
    [
      'new Node, Ready',
      { next: node('a', { labels: { pool: 'x' } }), listed: false },
      { reason: 'node-ready', node: 'a', labels: { pool: 'x' } },
    ],
    ['new Node, not Ready yet', { next: node('a', { ready: false }), listed: false }, undefined],
    [
      'NotReady → Ready',
      { prev: node('a', { ready: false }), next: node('a'), listed: false },
      { reason: 'node-ready', node: 'a', labels: {} },
    ],
    ['Ready → NotReady', { prev: node('a'), next: node('a', { ready: false }), listed: false }, undefined],
    ['deleted', { prev: node('a'), listed: false }, undefined],
    [
      'Ready → Ready, same images',
      { prev: node('a', { images: [[NGINX]] }), next: node('a', { images: [[NGINX]] }), listed: false },
      undefined,
    ],
    [
      'Ready → Ready, an image gone, list under the cap',
      { prev: node('a', { images: [[NGINX], [REDIS]] }), next: node('a', { images: [[REDIS]] }), listed: false },
      { reason: 'image-collected', node: 'a', labels: {}, removed: [NGINX] },
    ],
    [
      'an image gone, but the list is at the cap: proves nothing',
      { prev: node('a', { images: [[NGINX], ['x'], ['y']] }), next: node('a', { images: [['x'], ['y'], ['z']] }), listed: false },
      undefined,
    ],
    [
      'one of two names of an image gone',
      { prev: node('a', { images: [[NGINX, 'nginx@sha256:1']] }), next: node('a', { images: [['nginx@sha256:1']] }), listed: false },
      { reason: 'image-collected', node: 'a', labels: {}, removed: [NGINX] },
    ],
    ['images only added', { prev: node('a', { images: [] }), next: node('a', { images: [[NGINX]] }), listed: false }, undefined],
  ]
  for (const [name, change, want] of cases) t.strictSame(signalOf(change, cap), want, name)
  t.strictSame(
    signalOf(
      { prev: node('a', { images: [[NGINX], ['x'], ['y']] }), next: node('a', { images: [['x'], ['y'], ['z']] }), listed: false },
      -1,
    ),
    { reason: 'image-collected', node: 'a', labels: {}, removed: [NGINX] },
    'nodeStatusMaxImages -1: no cap',
  )
  t.equal(
    signalOf({ prev: node('a', { images: [[NGINX]] }), next: node('a', { images: [] }), listed: false }, 0),
    undefined,
    'nodeStatusMaxImages 0: the kubelet lists nothing, absence proves nothing',
  )
})

t.test('mergeSignals: node-ready wins, lost images add up', async (t) => {
  const ready: NodeSignal = { reason: 'node-ready', node: 'a', labels: { v: '2' } }
  const lost = (removed: string[]): NodeSignal => ({ reason: 'image-collected', node: 'a', labels: { v: '1' }, removed })
  t.strictSame(mergeSignals(undefined, ready), ready)
  t.strictSame(mergeSignals(lost([NGINX]), ready), ready)
  t.strictSame(mergeSignals(ready, lost([NGINX])), { reason: 'node-ready', node: 'a', labels: { v: '1' } })
  t.strictSame(mergeSignals(lost([NGINX]), lost([REDIS, NGINX])), {
    reason: 'image-collected',
    node: 'a',
    labels: { v: '1' },
    removed: [NGINX, REDIS],
  })
})

t.test('selectorMatches: every label of the selector with the same value; none selects every node', async (t) => {
  const cases: [Record<string, string>, Record<string, string>, boolean][] = [
    [{}, {}, true],
    [{}, { pool: 'a' }, true],
    [{ pool: 'a' }, { pool: 'a', zone: 'z' }, true],
    [{ pool: 'a' }, { pool: 'b' }, false],
    [{ pool: 'a' }, {}, false],
    [{ pool: 'a', zone: 'z' }, { pool: 'a' }, false],
    [{ pool: '' }, {}, false],
  ]
  for (const [selector, labels, want] of cases)
    t.equal(selectorMatches(selector, labels), want, `${JSON.stringify(selector)} ~ ${JSON.stringify(labels)}`)
})

function cache(name: string, o: Partial<CacheSummary> & { images?: string[]; selector?: Record<string, string> } = {}): CacheSummary {
  return {
    name,
    lists: o.lists ?? [{ images: o.images ?? [NGINX], nodeSelector: o.selector ?? {} }],
    inUse: o.inUse ?? true,
    ...(o.unused ? { unused: o.unused } : {}),
    processed: o.processed ?? true,
    processing: o.processing ?? false,
    refreshRequested: o.refreshRequested ?? false,
  }
}

t.test('chooseRefreshes: which caches a burst refreshes, which wait, which are dropped', async (t) => {
  const now = 1_000_000
  const nodes = new Map<string, NodeView>()
  const base = {
    now,
    waiting: new Map<string, Waiting>(),
    node: (name: string) => nodes.get(name),
    lastCollectedAt: new Map<string, number>(),
    busyRetryMs: 5_000,
    collectedRefreshMs: 600_000,
    nodeStatusMaxImages: 3,
  }
  const ready = (name: string, labels: Record<string, string> = {}): NodeSignal => ({ reason: 'node-ready', node: name, labels })
  const lost = (name: string, removed: string[], labels: Record<string, string> = {}): NodeSignal => ({
    reason: 'image-collected',
    node: name,
    labels,
    removed,
  })

  t.test('node-ready: caches whose nodeSelector matches, one refresh per cache for a burst of nodes', async (t) => {
    const caches = [
      cache('all'),
      cache('gpu', { selector: { pool: 'gpu' } }),
      cache('cpu', { selector: { pool: 'cpu' } }),
      cache('two-lists', {
        lists: [
          { images: [NGINX], nodeSelector: { pool: 'cpu' } },
          { images: [REDIS], nodeSelector: { pool: 'gpu' } },
        ],
      }),
      cache('empty-list', { lists: [{ images: [], nodeSelector: {} }] }),
    ]
    const choice = chooseRefreshes({
      ...base,
      caches,
      signals: [ready('g1', { pool: 'gpu' }), ready('g2', { pool: 'gpu' }), ready('g3', { pool: 'gpu' })],
    })
    t.strictSame(choice.refresh, [
      { cache: 'all', reason: 'node-ready' },
      { cache: 'gpu', reason: 'node-ready' },
      { cache: 'two-lists', reason: 'node-ready' },
    ])
    t.strictSame([...choice.waiting], [])
    t.strictSame(choice.dropped, [])
  })

  t.test('never while Processing: waits busyRetryMs; refresh requested, not processed, not in use: dropped', async (t) => {
    const caches = [
      cache('busy', { processing: true }),
      cache('asked', { refreshRequested: true }),
      cache('new', { processed: false }),
      cache('new-busy', { processed: false, processing: true }),
      cache('unused', { inUse: false }),
      cache('ok'),
    ]
    const choice = chooseRefreshes({ ...base, caches, signals: [ready('n1')] })
    t.strictSame(choice.refresh, [{ cache: 'ok', reason: 'node-ready' }])
    t.strictSame(
      [...choice.waiting],
      [
        ['busy', { reason: 'node-ready', notBefore: now + 5_000 }],
        ['new-busy', { reason: 'node-ready', notBefore: now + 5_000 }],
      ],
    )
    t.strictSame(choice.dropped, [
      { cache: 'asked', why: 'refresh already requested' },
      { cache: 'new', why: 'not processed yet' },
    ])
  })

  t.test('waiting caches come back: refreshed once not Processing, dropped when gone', async (t) => {
    const waiting = new Map<string, Waiting>([
      ['busy', { reason: 'node-ready', notBefore: now - 1 }],
      ['gone', { reason: 'node-ready', notBefore: now - 1 }],
      ['still-busy', { reason: 'image-collected', notBefore: now - 1 }],
    ])
    const caches = [cache('busy'), cache('still-busy', { processing: true })]
    const choice = chooseRefreshes({ ...base, waiting, caches, signals: [] })
    t.strictSame(choice.refresh, [{ cache: 'busy', reason: 'node-ready' }])
    t.strictSame([...choice.waiting], [['still-busy', { reason: 'image-collected', notBefore: now + 5_000 }]])
    t.strictSame(choice.dropped, [{ cache: 'gone', why: 'gone' }])
  })

  t.test('image-collected: the cache of an image a matching node listed and lost, under the cap, rate-limited', async (t) => {
    nodes.set('a', node('a', { labels: { pool: 'cpu' }, images: [[REDIS]] }))
    nodes.set('capped', node('capped', { images: [['x'], ['y'], ['z']] }))
    nodes.set('back', node('back', { images: [[NGINX]] }))
    nodes.set('down', node('down', { ready: false }))
    const caches = [
      cache('nginx'),
      cache('nginx-gpu', { selector: { pool: 'gpu' } }),
      cache('redis', { images: [REDIS] }),
      cache('nginx-new', { images: ['m.daocloud.io/docker.io/library/nginx:1.28'] }),
      cache('nginx-unprocessed', { processed: false }),
    ]
    t.strictSame(
      chooseRefreshes({ ...base, caches, signals: [lost('a', [NGINX], { pool: 'cpu' })] }).refresh,
      [{ cache: 'nginx', reason: 'image-collected' }],
      'only the cache holding the lost image, on a node its selector matches',
    )
    t.strictSame(
      chooseRefreshes({ ...base, caches, signals: [lost('a', [`${NGINX}-rc1`])] }).refresh,
      [{ cache: 'nginx', reason: 'image-collected' }],
      'a lost name that starts with the image counts (a tag or digest after it)',
    )
    for (const [name, signal] of [
      ['the node is at the cap now', lost('capped', [NGINX])],
      ['the node lists it again', lost('back', [NGINX])],
      ['the node is not Ready any more', lost('down', [NGINX])],
      ['the node is gone', lost('deleted', [NGINX])],
      ['a lost name that only contains the image further in', lost('a', [`proxy.example/${NGINX}`])],
    ] as const)
      t.strictSame(chooseRefreshes({ ...base, caches, signals: [signal] }).refresh, [], name)
    t.strictSame(
      chooseRefreshes({
        ...base,
        caches: [
          cache('batch', {
            lists: [
              { images: [REDIS, NGINX], nodeSelector: { pool: 'gpu' } },
              { images: [NGINX], nodeSelector: { pool: 'cpu' } },
            ],
          }),
          cache('batch-gpu', { lists: [{ images: [NGINX, REDIS], nodeSelector: { pool: 'gpu' } }] }),
        ],
        signals: [lost('a', [NGINX, 'm.daocloud.io/docker.io/library/unknown:1'])],
      }).refresh,
      [{ cache: 'batch', reason: 'image-collected' }],
      'several images and lists per cache: the list whose selector matches the node holds the lost image',
    )
    const batches = [cache('redis-in-use', { images: [NGINX, REDIS], unused: [NGINX] }), cache('nginx-batch', { images: [REDIS, NGINX] })]
    t.strictSame(
      chooseRefreshes({ ...base, caches: batches, signals: [lost('a', [NGINX])] }).refresh,
      [{ cache: 'nginx-batch', reason: 'image-collected' }],
      'a batch in use whose lost image no Pod uses any more is not refreshed for it',
    )
    const limited = chooseRefreshes({
      ...base,
      caches,
      signals: [lost('a', [NGINX])],
      lastCollectedAt: new Map([['nginx', now - 60_000]]),
    })
    t.strictSame(limited.refresh, [], 'refreshed for a collected image a minute ago')
    t.strictSame([...limited.waiting], [['nginx', { reason: 'image-collected', notBefore: now - 60_000 + 600_000 }]])
    const both = chooseRefreshes({
      ...base,
      caches,
      signals: [lost('a', [NGINX]), ready('b')],
      lastCollectedAt: new Map([['nginx', now - 60_000]]),
    })
    t.strictSame(
      both.refresh.map((r) => [r.cache, r.reason]),
      [
        ['nginx', 'node-ready'],
        ['redis', 'node-ready'],
        ['nginx-new', 'node-ready'],
      ],
      'a new node wins over the rate limit of collected images',
    )
    t.strictSame(both.dropped, [{ cache: 'nginx-unprocessed', why: 'not processed yet' }])
  })
})

t.test('burstDueAt: quiet for quietMs, at most maxWaitMs after the first event', async (t) => {
  const cases: [number, number, number, number, number][] = [
    [0, 0, 5_000, 30_000, 5_000],
    [0, 4_000, 5_000, 30_000, 9_000],
    [0, 28_000, 5_000, 30_000, 30_000],
    [0, 60_000, 5_000, 30_000, 30_000],
    [100, 100, 0, 30_000, 100],
  ]
  for (const [first, last, quiet, max, want] of cases)
    t.equal(burstDueAt(first, last, quiet, max), want, `${first}/${last}/${quiet}/${max}`)
})

function imageCache(
  name: string,
  o: { status?: string; annotations?: Record<string, string>; images?: string[]; rv?: string } = {},
): ImageCache {
  return {
    metadata: { name, resourceVersion: o.rv ?? '1', annotations: o.annotations ?? {} },
    spec: { cacheSpec: [{ images: o.images ?? [NGINX], nodeSelector: { pool: 'a' } }] },
    status: o.status ? { status: o.status } : undefined,
  }
}

t.test('summaryOf reads a cache', async (t) => {
  const cases: [string, ImageCache, Partial<CacheSummary>][] = [
    ['new', imageCache('c'), { inUse: true, processed: false, processing: false, refreshRequested: false }],
    ['processing', imageCache('c', { status: 'Processing' }), { inUse: true, processed: true, processing: true, refreshRequested: false }],
    ['succeeded', imageCache('c', { status: 'Succeeded' }), { inUse: true, processed: true, processing: false, refreshRequested: false }],
    [
      'refresh asked',
      imageCache('c', { status: 'Succeeded', annotations: { [REFRESH_ANNOTATION]: 'x' } }),
      { inUse: true, processed: true, processing: false, refreshRequested: true },
    ],
    [
      'unused',
      imageCache('c', { status: 'Succeeded', annotations: { [UNUSED_SINCE_ANNOTATION]: '2026-01-01T00:00:00Z' } }),
      { inUse: false, unused: [NGINX], processed: true, processing: false, refreshRequested: false },
    ],
    [
      'purging',
      imageCache('c', { status: 'Succeeded', annotations: { [PURGE_ANNOTATION]: 'x' } }),
      { inUse: false, processed: true, processing: false, refreshRequested: false },
    ],
  ]
  for (const [name, c, want] of cases)
    t.strictSame(summaryOf(c), { name: 'c', lists: [{ images: [NGINX], nodeSelector: { pool: 'a' } }], ...want }, name)
  const marks = (m: Record<string, string>) => ({ [UNUSED_SINCE_ANNOTATION]: JSON.stringify(m) })
  const batch = (annotations: Record<string, string>) => imageCache('b', { status: 'Succeeded', images: [NGINX, REDIS], annotations })
  t.strictSame(
    summaryOf(batch(marks({ [NGINX]: '2026-01-01T00:00:00.000Z' }))),
    {
      name: 'b',
      lists: [{ images: [NGINX, REDIS], nodeSelector: { pool: 'a' } }],
      inUse: true,
      unused: [NGINX],
      processed: true,
      processing: false,
      refreshRequested: false,
    },
    'a batch with one image unused is in use; the unused image is named',
  )
  t.strictSame(
    summaryOf(batch(marks({ [NGINX]: '2026-01-01T00:00:00.000Z', [REDIS]: '2026-01-01T00:00:00.000Z' }))),
    {
      name: 'b',
      lists: [{ images: [NGINX, REDIS], nodeSelector: { pool: 'a' } }],
      inUse: false,
      unused: [NGINX, REDIS],
      processed: true,
      processing: false,
      refreshRequested: false,
    },
    'a batch with every image unused is not in use',
  )
})

class FakeApi {
  readonly calls: { name: string; annotations: Record<string, string | null>; rv: string }[] = []
  readonly failures: ApiError[] = []
  async annotate(name: string, annotations: Record<string, string | null>, rv: string): Promise<void> {
    this.calls.push({ name, annotations, rv })
    const f = this.failures.shift()
    if (f) throw f
  }
}

function metricsStub() {
  const writes: Record<string, number> = {}
  let retries = 0
  return {
    writes: {
      inc: (l: { verb: string; result: string }) => void (writes[`${l.verb}/${l.result}`] = (writes[`${l.verb}/${l.result}`] ?? 0) + 1),
    },
    retries: { inc: () => void retries++ },
    counts: () => ({ writes, retries }),
  }
}

t.test('refreshChosen: the annotation with the resourceVersion seen, rate-limited, checked again before each write', async (t) => {
  const clock = new ManualClock()
  const store = new Map<string, ImageCache>([
    ['ok', imageCache('ok', { status: 'Succeeded', rv: '10' })],
    ['busy', imageCache('busy', { status: 'Processing' })],
    ['conflict', imageCache('conflict', { status: 'Failed' })],
    ['down', imageCache('down', { status: 'Succeeded' })],
    ['refused', imageCache('refused', { status: 'Succeeded' })],
  ])
  const api = new FakeApi()
  const metrics = metricsStub()
  let taken = 0
  const deps = {
    api,
    caches: () => [...store.values()],
    get: (name: string) => store.get(name),
    limiter: { take: async () => void taken++ },
    metrics: metrics as never,
    clock,
    ready: () => true,
    logger,
  }
  let seen: readonly CacheSummary[] = []
  const choose: ChooseCaches = (caches) => {
    seen = caches
    return ['ok', 'busy', 'gone', 'conflict', 'down', 'refused']
  }
  api.failures.push(new ApiError(409, 'conflict', 'Conflict'), new ApiError(503, 'unavailable'), new ApiError(403, 'forbidden'))
  // The failures go to the writes in order: conflict, down, refused ('ok' succeeds first).
  api.failures.unshift(undefined as never)
  const out = await refreshChosen(deps, choose)
  t.strictSame(
    seen.map((c) => c.name),
    ['ok', 'busy', 'conflict', 'down', 'refused'],
  )
  t.strictSame([...out!], [
    ['ok', 'refreshed'],
    ['busy', 'busy'],
    ['gone', 'gone'],
    ['conflict', 'conflict'],
    ['down', 'retry'],
    ['refused', 'error'],
  ] satisfies [string, RefreshOutcome][])
  t.strictSame(api.calls[0], { name: 'ok', annotations: { [REFRESH_ANNOTATION]: new Date(clock.now()).toISOString() }, rv: '10' })
  t.strictSame(
    api.calls.map((c) => c.name),
    ['ok', 'conflict', 'down', 'refused'],
    'no write to a Processing cache nor a gone one',
  )
  t.equal(taken, 6, 'every chosen cache takes a token before it is looked at')
  t.strictSame(metrics.counts(), {
    writes: { 'annotate/ok': 1, 'annotate/conflict': 1, 'annotate/transient': 1, 'annotate/error': 1 },
    retries: 1,
  })
  t.equal(await refreshChosen({ ...deps, ready: () => false }, () => t.fail('not asked when not ready') as never), undefined)
  let answers = 2
  const stopping = await refreshChosen({ ...deps, ready: () => answers-- > 0 }, () => ['ok', 'down', 'refused'])
  t.strictSame([...stopping!], [['ok', 'refreshed']], 'stopped while waiting for the rate limit: nothing more is written')
})

class FakeNodes {
  readonly handlers = new Set<(c: NodeChange) => void>()
  readonly views = new Map<string, NodeView>()
  subscribe(h: (c: NodeChange) => void) {
    this.handlers.add(h)
    return () => this.handlers.delete(h)
  }
  get(name: string) {
    return this.views.get(name)
  }
  emit(change: NodeChange) {
    if (change.next) this.views.set(change.next.name, change.next)
    for (const h of this.handlers) h(change)
  }
}

t.test('NodeRefresher: a burst of nodes is one round, Processing caches come back, retries while pre-pull is not ready', async (t) => {
  const clock = new ManualClock()
  const nodes = new FakeNodes()
  const registry = new Registry()
  let caches: CacheSummary[] = [cache('all'), cache('busy', { processing: true }), cache('gpu', { selector: { pool: 'gpu' } })]
  const rounds: { at: number; chosen: string[] }[] = []
  let ready = false
  const refresher = new NodeRefresher({
    nodes,
    clock,
    logger,
    registry,
    config: nodeRefreshSchema.parse({ quietSeconds: 2, maxWaitSeconds: 10, busyRetrySeconds: 3 }),
    refresh: async (choose) => {
      if (!ready) return undefined
      const chosen = [...choose(caches)]
      rounds.push({ at: clock.now(), chosen })
      return new Map(chosen.map((c) => [c, 'refreshed' as RefreshOutcome]))
    },
  })
  refresher.start()
  const start = clock.now()
  nodes.emit({ next: node('old'), listed: true })
  for (let i = 0; i < 5; i++) {
    nodes.emit({ next: node(`n${i}`), listed: false })
    await clock.advance(1_000)
  }
  t.strictSame(rounds, [], 'still joining: nothing yet')
  await clock.advance(1_000)
  t.strictSame(rounds, [], 'quiet for 2 s, but pre-pull is not ready')
  ready = true
  await clock.advance(3_000)
  t.strictSame(
    rounds,
    [{ at: start + 9_000, chosen: ['all'] }],
    'one round for five nodes, once pre-pull is ready (busyRetrySeconds later)',
  )
  t.equal(refresher.waitingCount, 1)
  caches = [cache('all', { refreshRequested: true }), cache('busy'), cache('gpu', { selector: { pool: 'gpu' } })]
  await clock.advance(3_000)
  t.strictSame(rounds.at(-1), { at: start + 12_000, chosen: ['busy'] }, 'the Processing cache, once done')
  t.equal(refresher.waitingCount, 0)
  const metric = async (name: string) =>
    (await registry.getSingleMetric(name)!.get()).values.map((v) => [v.labels.reason, v.value] as [unknown, number])
  t.strictSame(await metric('mirrorhook_prepull_node_refreshes_total'), [['node-ready', 2]])
  t.strictSame(await metric('mirrorhook_prepull_node_events_total'), [['node-ready', 5]])

  // A node joining for a long time: handled at most maxWaitSeconds after its first event.
  caches = [cache('all'), cache('busy'), cache('gpu', { selector: { pool: 'gpu' } })]
  const before = rounds.length
  const longStart = clock.now()
  for (let i = 0; i < 12; i++) {
    nodes.emit({ prev: node(`n${i % 5}`, { ready: false }), next: node(`n${i % 5}`, { labels: { pool: 'gpu' } }), listed: false })
    await clock.advance(1_000)
  }
  t.strictSame(rounds.slice(before), [{ at: longStart + 10_000, chosen: ['all', 'busy', 'gpu'] }])
  await refresher.stop()
  t.equal(clock.pendingTimers, 0, 'stopped: no timer left')
})
