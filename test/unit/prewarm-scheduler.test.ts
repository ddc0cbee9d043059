// The scheduler with a manual clock: runs at the scheduled time in its time zone, once across
// replicas, a missed time caught up at start-up, a failed run tried again a minute later. The
// Lease is an in-memory stand-in with the API's claim rules (server/prewarm/lease.ts); the real
// Lease, with its write conflicts, is in test/e2e/prewarm.test.ts.
import t from 'tap'
import { KubeConfig } from '@kubernetes/client-node'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import type { WorkloadImage } from '../../server/prewarm/collect.js'
import type { Claim, LeaseRecord } from '../../server/prewarm/lease.js'
import type { PrewarmEntry } from '../../server/prewarm/plan.js'
import { Prewarmer, type RunClaims } from '../../server/prewarm/prewarmer.js'
import { ManualClock } from '../support/clock.js'

const MIN = 60_000
const HOUR = 60 * MIN

class LeaseStandIn {
  exists = false
  last?: number
  lastRun?: string
  holder?: string
  until = 0
  constructor(private readonly clock: ManualClock) {}
  for(identity: string, durationMs = 30_000): RunClaims {
    return {
      record: async (baseline) => {
        if (!this.exists) {
          this.exists = true
          this.last = baseline
        }
        return { lastScheduled: this.last, lastRun: this.lastRun } satisfies LeaseRecord
      },
      claim: async (scheduled): Promise<Claim> => {
        if (this.last !== undefined && this.last >= scheduled) return { kind: 'done' }
        const now = this.clock.now()
        if (this.holder && this.holder !== identity && now < this.until) return { kind: 'busy', holder: this.holder, untilMs: this.until }
        this.holder = identity
        this.until = now + durationMs
        return { kind: 'claimed' }
      },
      renew: async () => {
        if (this.holder !== identity) return false
        this.until = this.clock.now() + durationMs
        return true
      },
      release: async (completed) => {
        if (this.holder !== identity) return false
        if (completed) {
          this.last = Math.max(this.last ?? -Infinity, completed.scheduled)
          this.lastRun = completed.summary
        }
        this.holder = undefined
        return true
      },
    }
  }
}

const iso = (ms: number) => new Date(ms).toISOString()
const image = (name: string, ref: string): WorkloadImage => ({
  kind: 'Deployment',
  namespace: 'shop',
  name,
  container: 'app',
  init: false,
  image: ref,
})

function setup(start: string) {
  const clock = new ManualClock(Date.parse(start))
  const lease = new LeaseStandIn(clock)
  const config = resolveConfig({
    mode: 'always',
    mirror: { prefix: 'mirror.example' },
    registries: ['docker.io'],
    prewarm: {
      enabled: true,
      schedule: '30 2 * * *',
      timeZone: 'Asia/Shanghai',
      namespaces: ['shop'],
      registries: { 'harbor.corp.example': { api: 'oci', order: 'semver' } },
    },
  })
  const policy = compilePolicy(config)
  const runs: { by: string; at: string; entries: PrewarmEntry[]; keepUntil: string }[] = []
  let listFails = false
  const replica = (identity: string) => {
    const registry = new Registry()
    const p = new Prewarmer({
      kubeConfig: new KubeConfig(),
      config,
      policy,
      reachability: () => staticReachability(policy),
      prepull: {
        prewarm: (entries, keepUntilMs) =>
          void runs.push({ by: identity, at: iso(clock.now()), entries: [...entries], keepUntil: iso(keepUntilMs) }),
      },
      namespace: 'mirrorhook',
      identity,
      logger: pino({ level: 'silent' }),
      registry,
      clock,
      lease: lease.for(identity),
      workloads: {
        namespaces: async () => ['shop'],
        images: async () => {
          if (listFails) throw new Error('the API server did not answer')
          return { images: [image('web', 'harbor.corp.example/shop/web:1.2.0'), image('proxy', 'nginx:1.27')], workloads: 2 }
        },
      },
      createResolver: () => ({
        newest: async () => ({ newest: { tag: '1.3.0', order: 'semver', evidence: '1.3.0 > 1.2.0' }, reason: 'newest', requests: 1 }),
      }),
    })
    t.teardown(() => p.stop())
    const runsBy = async (result: string) =>
      ((await registry.getSingleMetric('mirrorhook_prewarm_runs_total')?.get())?.values ?? [])
        .filter((v) => v.labels.result === result)
        .reduce((n, v) => n + v.value, 0)
    return { p, runsBy }
  }
  const advance = async (ms: number, ...ps: Prewarmer[]) => {
    await clock.advance(ms)
    await Promise.all(ps.map((p) => p.idle()))
  }
  return { clock, lease, runs, replica, advance, failLists: (v: boolean) => (listFails = v) }
}

// What one run over the fixture's workloads finds.
const harbor = { 'harbor.corp.example': { questions: 1, requests: 1, newer: 1, same: 0, errors: 0 } }
const counts = { namespaces: 1, workloads: 2, containers: 2, images: 3, newerTags: 1 }

t.test('runs at 02:30 in Shanghai (18:30 UTC), not before; the first start owes nothing', async (t) => {
  const { runs, replica, advance, lease } = setup('2030-11-28T18:29:00Z')
  const a = replica('a')
  a.p.start()
  await advance(0, a.p)
  t.equal(iso(lease.last!), '2030-11-27T18:30:00.000Z', 'baseline: the time just passed')
  await advance(MIN - 1, a.p)
  t.strictSame(runs, [])
  await advance(1, a.p)
  t.strictSame(runs, [
    {
      by: 'a',
      at: '2030-11-28T18:30:00.000Z',
      entries: [
        { image: 'harbor.corp.example/shop/web:1.2.0' },
        { image: 'harbor.corp.example/shop/web:1.3.0' },
        { image: 'mirror.example/docker.io/library/nginx:1.27', original: 'nginx:1.27' },
      ],
      // An hour past the next scheduled time.
      keepUntil: '2030-11-29T19:30:00.000Z',
    },
  ])
  t.equal(iso(lease.last!), '2030-11-28T18:30:00.000Z')
  t.strictSame(a.p.lastRun(), {
    scheduledFor: '2030-11-28T18:30:00.000Z',
    startedAt: '2030-11-28T18:30:00.000Z',
    by: 'a',
    finishedAt: '2030-11-28T18:30:00.000Z',
    result: 'ok',
    ...counts,
    keepUntil: '2030-11-29T19:30:00.000Z',
    registries: harbor,
  })
  // The next day, again; hourly checks in between run nothing.
  for (let h = 0; h < 24; h++) await advance(HOUR, a.p)
  t.strictSame(
    runs.map((r) => r.at),
    ['2030-11-28T18:30:00.000Z', '2030-11-29T18:30:00.000Z'],
  )
})

t.test('two replicas: one run per scheduled time; the other takes over only when the holder is gone', async (t) => {
  const { runs, replica, advance, lease } = setup('2030-11-28T18:29:00Z')
  const a = replica('a')
  const b = replica('b')
  a.p.start()
  b.p.start()
  await advance(MIN, a.p, b.p)
  t.equal(runs.length, 1)
  t.equal((await a.runsBy('ok')) + (await b.runsBy('ok')), 1)
  await advance(31_000, a.p, b.p)
  t.equal(runs.length, 1, 'the other replica found it recorded')

  // A holder that died mid-run (its claim stays, unreleased): taken over after its Lease expires.
  lease.holder = 'dead'
  lease.until = Date.parse('2030-11-29T18:30:20Z')
  await advance(24 * HOUR - 31_000, a.p, b.p)
  t.equal(runs.length, 1, 'busy: nobody runs while the dead holder’s Lease lasts')
  await advance(20_999, a.p, b.p)
  t.equal(runs.length, 1, 'not before its Lease expired (and a second more)')
  await advance(1, a.p, b.p)
  t.strictSame(
    runs.map((r) => r.at),
    ['2030-11-28T18:30:00.000Z', '2030-11-29T18:30:21.000Z'],
    'run by the replica that looked again a second after the Lease expired',
  )
  t.equal(iso(lease.last!), '2030-11-29T18:30:00.000Z', 'recorded for the scheduled time it stood for')
})

t.test('missed times while no replica ran: one catch-up run at start-up, for the latest', async (t) => {
  const { runs, replica, advance, lease } = setup('2030-11-28T18:29:00Z')
  const a = replica('a')
  a.p.start()
  await advance(MIN, a.p)
  await a.p.stop()
  await advance(3 * 24 * HOUR + 5 * MIN)
  const b = replica('b')
  b.p.start()
  await advance(0, b.p)
  t.strictSame(
    runs.map((r) => [r.by, r.at]),
    [
      ['a', '2030-11-28T18:30:00.000Z'],
      ['b', '2030-12-01T18:35:00.000Z'],
    ],
  )
  t.equal(iso(lease.last!), '2030-12-01T18:30:00.000Z')
  t.strictSame(b.p.lastRun(), {
    scheduledFor: '2030-12-01T18:30:00.000Z',
    startedAt: '2030-12-01T18:35:00.000Z',
    by: 'b',
    finishedAt: '2030-12-01T18:35:00.000Z',
    result: 'ok',
    ...counts,
    keepUntil: '2030-12-02T19:30:00.000Z',
    registries: harbor,
  })
})

t.test('a failed run is not recorded and is tried again a minute later', async (t) => {
  const { runs, replica, advance, lease, failLists } = setup('2030-11-28T18:29:00Z')
  const a = replica('a')
  a.p.start()
  failLists(true)
  await advance(MIN, a.p)
  t.equal(await a.runsBy('failed'), 1)
  t.strictSame(a.p.lastRun(), {
    scheduledFor: '2030-11-28T18:30:00.000Z',
    startedAt: '2030-11-28T18:30:00.000Z',
    by: 'a',
    finishedAt: '2030-11-28T18:30:00.000Z',
    result: 'failed',
    namespaces: 0,
    workloads: 0,
    containers: 0,
    images: 0,
    newerTags: 0,
    registries: {},
    error: 'the API server did not answer',
  })
  t.equal(iso(lease.last!), '2030-11-27T18:30:00.000Z', 'not recorded')
  t.equal(lease.holder, undefined, 'released')
  failLists(false)
  await advance(MIN - 1, a.p)
  t.strictSame(runs, [])
  await advance(1, a.p)
  t.strictSame(
    runs.map((r) => r.at),
    ['2030-11-28T18:31:00.000Z'],
  )
  t.equal(iso(lease.last!), '2030-11-28T18:30:00.000Z')
})
