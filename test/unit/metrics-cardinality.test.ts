// No metric label value comes from a Pod spec: made-up registries and images add no series.
import t from 'tap'
import { pino } from 'pino'
import { Gauge, Registry } from 'prom-client'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy, registryMetricLabel } from '../../server/core/policy.js'
import { Metrics } from '../../server/observability/metrics.js'
import { BoundedImageGauge, MAX_IMAGE_SERIES } from '../../server/prepull/metrics.js'
import { ReachabilityService } from '../../server/reachability/service.js'
import { podReview } from '../support/helpers.js'
import { staticWebhookApp } from '../support/webhook-app.js'

const logger = pino({ level: 'silent' })

function policyOf(input: ConfigInput) {
  return compilePolicy(resolveConfig(input, {}))
}

function review(i: number, images: string[]) {
  return podReview(`uid-${i}`, images, { name: `p-${i}` })
}

// Series of every metric in the exposition, comments excluded.
const seriesCount = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).length

t.test('registryMetricLabel: configured names are kept, anything else is other', async (t) => {
  const policy = policyOf({
    mode: 'always',
    registries: ['*', 'quay.io'],
    unreachable: ['gcr.io'],
    mirror: { prefix: 'm.daocloud.io', hosts: { 'ghcr.io': 'harbor.corp.example/ghcr' } },
  })
  const cases: [string, string][] = [
    ['quay.io', 'quay.io'],
    ['gcr.io', 'gcr.io'],
    ['ghcr.io', 'ghcr.io'],
    ['m.daocloud.io', 'm.daocloud.io'],
    ['harbor.corp.example', 'harbor.corp.example'],
    ['docker.io', 'other'],
    ['made-up-1.example', 'other'],
    ['*', '*'],
  ]
  for (const [registry, label] of cases) t.equal(registryMetricLabel(policy, registry), label, registry)
})

t.test('admission metrics: 600 reviews naming 1,200 made-up registries add no series', async (t) => {
  const policy = policyOf({
    mode: 'always',
    registries: ['*'],
    mirror: { prefix: 'm.daocloud.io', hosts: { 'ghcr.io': 'harbor.corp.example/ghcr' } },
  })
  const metrics = new Metrics()
  const app = await staticWebhookApp(policy, { logger, metrics })
  t.teardown(() => app.close())
  const round = async (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const images = [`r${i}.example/app:1`, `${'x'.repeat(20)}-${i}.example:5000/app:1`, 'ghcr.io/acme/app:1']
      const res = await app.inject({ method: 'POST', url: '/mutate', payload: review(i, images) })
      t.equal(res.statusCode, 200)
    }
  }
  await round(0, 300)
  const before = seriesCount(await metrics.registry.metrics())
  await round(300, 600)
  t.equal(seriesCount(await metrics.registry.metrics()), before, 'the second 300 reviews, all new registries, add no series')
  const rewrites = (await metrics.rewrites.get()).values.map((v) => [v.labels.registry, v.value])
  t.strictSame(rewrites, [
    ['other', 600],
    ['ghcr.io', 600],
  ])
  const kept = (await metrics.kept.get()).values.map((v) => [v.labels.reason, v.value])
  t.strictSame(kept, [['inexpressible', 600]], 'registries with a port cannot be expressed under a prefix: counted by code')
})

t.test('reachability metrics: registries learned from Pods are counted as other', async (t) => {
  const policy = policyOf({ mode: 'auto', registries: ['quay.io', 'ghcr.io'] })
  const registry = new Registry()
  const service = new ReachabilityService({ policy, logger, namespace: 'mirrorhook', metricsRegistry: registry, now: () => 1_000_000 })
  const at = 1_000_000
  service.observe('quay.io', { at, source: 'pod', outcome: 'fail', detail: 'i/o timeout' })
  for (let i = 0; i < 300; i++) service.observe(`made-up-${i}.example`, { at, source: 'pod', outcome: 'fail', detail: 'i/o timeout' })
  const state = (await registry.getSingleMetric('mirrorhook_registry_state')!.get()).values
  t.strictSame(
    state.map((v) => [v.labels.registry, v.labels.state, v.value]),
    [
      ['quay.io', 'reachable', 0],
      ['quay.io', 'unreachable', 1],
      ['quay.io', 'slow', 0],
      ['quay.io', 'unknown', 0],
      ['other', 'reachable', 0],
      ['other', 'unreachable', 300],
      ['other', 'slow', 0],
      ['other', 'unknown', 0],
    ],
  )
})

t.test('pre-pull per-image gauges export at most MAX_IMAGE_SERIES images', async (t) => {
  const gauge = new Gauge({ name: 'per_image', help: 'test', labelNames: ['image', 'state'] as const, registers: [] })
  const bounded = new BoundedImageGauge(gauge)
  for (let i = 0; i < 1000; i++) bounded.set({ image: `m.daocloud.io/docker.io/u/app-${i}:1`, state: 'pending' }, 1)
  t.equal(bounded.images, MAX_IMAGE_SERIES)
  t.equal((await gauge.get()).values.length, MAX_IMAGE_SERIES)
  bounded.remove({ image: 'm.daocloud.io/docker.io/u/app-0:1', state: 'pending' })
  bounded.set({ image: 'm.daocloud.io/docker.io/u/app-999:1', state: 'failed' }, 1)
  t.strictSame(
    (await gauge.get()).values.filter((v) => /app-(0|999):/.test(v.labels.image as string)).map((v) => [v.labels.image, v.labels.state]),
    [['m.daocloud.io/docker.io/u/app-999:1', 'failed']],
    'a removed image frees its place',
  )
  t.equal((await gauge.get()).values.length, MAX_IMAGE_SERIES)
})
