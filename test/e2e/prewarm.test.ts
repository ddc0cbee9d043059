// Scheduled pre-warm against a real kube-apiserver (with kube-fledged's ImageCache CRD) and a real
// OCI registry (distribution): Deployments whose images live in the registry lead, at the
// scheduled time, to ImageCaches for the current and the newest tag; two replicas run a scheduled
// time once; a missed time is caught up at start-up; a registry down is one log line and a metric,
// the current images are still warmed and the newest tags are asked again next run;
// `mirrorhook prewarm --dry-run` prints the same choice. Time is a manual clock: no sleeps.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { pino, type Logger } from 'pino'
import { Registry as Metrics } from 'prom-client'
import { stringify as toYaml } from 'yaml'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { kubeFledgedSchema } from '../../server/prepull/config.js'
import { Prepull } from '../../server/prepull/prepull.js'
import { Prewarmer } from '../../server/prewarm/prewarmer.js'
import { createTagResolver } from '../../server/prewarm/registry-api.js'
import { ManualClock } from '../support/clock.js'
import type { ControlPlane } from '../support/controlplane.js'
import { runCli, waitFor } from '../support/helpers.js'
import { pushImage, startRegistry, type Registry } from '../support/registry.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { applyObject, createNamespace } from '../support/webhook.js'

const CRD = fileURLToPath(new URL('../fixtures/kubefledged/imagecache-crd.yaml', import.meta.url))
const KF = 'kube-fledged'
const OWN = 'mirrorhook'
const CACHES = `/apis/kubefledged.io/v1alpha2/namespaces/${KF}/imagecaches`
const HOUR = 3_600_000
// Where the Lease records the last scheduled time.
const LAST_SCHEDULED_ANNOTATION = 'mirrorhook.io/prewarm-last-scheduled'

type Line = Record<string, unknown> & { msg?: string }

const cp = await withControlPlane(t)

if (cp) {
  const c: ControlPlane = cp
  const kubeConfig = await c.kubeConfig()
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-prewarm-e2e-'))
  let reg: Registry = await startRegistry({ dir })
  const port = Number(reg.host.split(':')[1])
  t.teardown(async () => {
    await reg.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  const R = reg.host
  for (const tag of ['1.0.0', '1.1.0', '1.2.0', 'latest']) await pushImage(reg, 'shop/web', tag)
  for (const tag of ['v2.0.0', 'v2.1.0']) await pushImage(reg, 'shop/api', tag)
  for (const tag of ['5.0.0']) await pushImage(reg, 'shop/worker', tag)

  const apply = await c.kubectl(['apply', '-f', CRD])
  if (apply.code !== 0) throw new Error(apply.stderr)
  for (const ns of [KF, OWN, 'shop', 'elsewhere']) await createNamespace(c, ns, false)
  const deployment = (namespace: string, name: string, containers: [string, string][], init: [string, string][] = []) =>
    applyObject(c, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name, namespace },
      spec: {
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name } },
          spec: {
            initContainers: init.map(([n, image]) => ({ name: n, image })),
            containers: containers.map(([n, image]) => ({ name: n, image })),
          },
        },
      },
    })
  await deployment('shop', 'web', [['app', `${R}/shop/web:1.1.0`]], [['migrate', `${R}/shop/api:v2.0.0`]])
  await deployment('shop', 'worker', [['run', `${R}/shop/worker:5.0.0`]])
  await deployment('elsewhere', 'ignored', [['app', `${R}/shop/web:1.0.0`]])
  // As a mirrored registry the test registry goes by a name: a loopback address is never mirrored
  // (noProxy's loopback rule). The name stands for the registry as a DNS entry would: its
  // resolver is the real one, pointed at the registry's address (see `replica`).
  const NAMED = 'registry.corp.example'
  await createNamespace(c, 'mirrored', false)
  await deployment('mirrored', 'web', [['app', `${NAMED}/shop/web:1.1.0`]], [['migrate', `${NAMED}/shop/api:v2.0.0`]])

  const configInput = (mirrored: boolean, lease: string) => ({
    mode: 'always',
    mirror: mirrored ? { prefix: 'mirror.example', hosts: { [NAMED]: 'mirror.example/corp' } } : { prefix: 'mirror.example' },
    registries: mirrored ? ['docker.io', NAMED] : ['docker.io'],
    reachability: { enabled: false },
    remediation: { enabled: false },
    kubeFledged: { namespace: KF },
    prewarm: {
      enabled: true,
      schedule: '0 3 * * *',
      timeZone: 'Asia/Shanghai',
      namespaces: [mirrored ? 'mirrored' : 'shop'],
      kinds: ['Deployments'],
      lease,
      leaseDurationSeconds: 30,
      registries: { [mirrored ? NAMED : R]: { api: 'oci', order: 'semver', caFile: reg.caFile } },
    },
  })

  const prepull = new Prepull({
    kubeConfig,
    // No kube-fledged processes the batches here: a new batch does not wait for the last one.
    config: kubeFledgedSchema.parse({
      namespace: KF,
      writesPerSecond: 100,
      writeBurst: 50,
      crdPollSeconds: 1,
      unusedPurgeSeconds: 0,
      batchWaitSeconds: 0,
    }),
    logger: pino({ level: 'silent' }),
    registry: new Metrics(),
  })
  prepull.start()
  t.teardown(() => prepull.stop())

  // 03:00 in Shanghai is 19:00 UTC the day before. In the future: pre-pull's own (real) clock
  // must see the pins as current.
  const clock = new ManualClock(Date.parse('2030-11-28T18:59:00Z'))
  // A log line without pino's own fields (level, time, pid, hostname) and its message.
  const fields = ({ level: _level, time: _time, pid: _pid, hostname: _hostname, msg: _msg, ...rest }: Line) => rest
  const replica = (identity: string, mirrored = false, lease = 'mirrorhook-prewarm') => {
    const lines: Line[] = []
    const logger: Logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) })
    const config = resolveConfig(configInput(mirrored, lease))
    const policy = compilePolicy(config)
    const registry = new Metrics()
    const p = new Prewarmer({
      kubeConfig,
      config,
      policy,
      reachability: () => staticReachability(policy),
      prepull,
      namespace: OWN,
      identity,
      logger,
      registry,
      clock,
      createResolver: (host, entry, deps) => createTagResolver(host === NAMED ? R : host, entry, deps),
    })
    t.teardown(() => p.stop())
    const metric = async (name: string, labels: Record<string, string> = {}) =>
      ((await registry.getSingleMetric(name)?.get())?.values ?? [])
        .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
        .reduce((n, v) => n + v.value, 0)
    return { p, lines, metric }
  }
  // Moves the manual clock in steps of at most half an hour (a replica looks at its schedule at
  // least hourly), waiting after each step for what its timers started (API and registry calls).
  const advance = async (ms: number, ...replicas: { p: Prewarmer }[]) => {
    let left = ms
    do {
      const step = Math.min(left, HOUR / 2)
      await clock.advance(step)
      await Promise.all(replicas.map((r) => r.p.idle()))
      left -= step
    } while (left > 0)
  }
  // Pre-pull writes batches: every image of every ImageCache, as `<batch> <image>`.
  const caches = async (): Promise<any[]> => (await c.request('GET', CACHES)).json().items as any[]
  const cacheImages = async (): Promise<string[]> =>
    (await caches()).flatMap((o) => (o.spec.cacheSpec[0].images as string[]).map((i) => `${o.metadata.name} ${i}`)).sort()
  // The images the batches hold (an image held twice is listed twice).
  const heldImages = async (): Promise<string[]> => (await cacheImages()).map((l) => l.split(' ')[1]!).sort()
  // The batch holding an image, found by content.
  const batchOf = async (image: string): Promise<any> => (await caches()).find((o) => o.spec.cacheSpec[0].images.includes(image))
  const lastScheduled = async (lease: string) =>
    (await c.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${OWN}/leases/${lease}`)).json().metadata.annotations?.[
      LAST_SCHEDULED_ANNOTATION
    ]

  const internal = [`${R}/shop/web:1.1.0`, `${R}/shop/web:1.2.0`, `${R}/shop/api:v2.0.0`, `${R}/shop/api:v2.1.0`, `${R}/shop/worker:5.0.0`]

  t.test('at the scheduled time, once across two replicas: caches for the current and the newest tags', async (t) => {
    const a = replica('replica-a')
    const b = replica('replica-b')
    a.p.start()
    b.p.start()
    await advance(0, a, b)
    t.equal(
      await lastScheduled('mirrorhook-prewarm'),
      '2030-11-27T19:00:00.000Z',
      'first start: the time just passed is the baseline, not a missed run',
    )
    t.equal(
      (await a.metric('mirrorhook_prewarm_runs_total')) + (await b.metric('mirrorhook_prewarm_runs_total')),
      0,
      'nothing before 03:00',
    )

    await advance(60_000, a, b)
    const expected = [...internal].sort()
    await waitFor(
      'the ImageCaches of the current and newest tags',
      async () => JSON.stringify(await heldImages()) === JSON.stringify(expected),
      60_000,
    )
    t.same(
      await heldImages(),
      expected,
      'internal registry: the references as written, each in one batch; 1.0.0 (another namespace) and latest are not warmed',
    )
    const runs = [
      await a.metric('mirrorhook_prewarm_runs_total', { result: 'ok' }),
      await b.metric('mirrorhook_prewarm_runs_total', { result: 'ok' }),
    ]
    t.same(runs.sort(), [0, 1], 'one replica ran it')
    t.equal(await lastScheduled('mirrorhook-prewarm'), '2030-11-28T19:00:00.000Z')
    const ranA = (await a.metric('mirrorhook_prewarm_runs_total')) === 1 ? a : b
    const summary = ranA.lines.filter((l) => l.msg === 'pre-warm run done')
    t.equal(summary.length, 1, 'one summary line')
    const run = {
      scheduledFor: '2030-11-28T19:00:00.000Z',
      startedAt: '2030-11-28T19:00:00.000Z',
      by: ranA === a ? 'replica-a' : 'replica-b',
      finishedAt: '2030-11-28T19:00:00.000Z',
      result: 'ok',
      namespaces: 1,
      workloads: 2,
      containers: 3,
      images: 5,
      newerTags: 2,
      keepUntil: '2030-11-29T20:00:00.000Z',
    }
    t.same(fields(summary[0]!), { ...run, durationMs: 0 })
    t.equal(await ranA.metric('mirrorhook_prewarm_tags_resolved_total', { registry: R, result: 'newer' }), 2)
    t.equal(await ranA.metric('mirrorhook_prewarm_tags_resolved_total', { registry: R, result: 'current' }), 1)
    t.equal(
      await ranA.metric('mirrorhook_prewarm_registry_requests_total', { registry: R }),
      3,
      'registry requests counted: one a repository',
    )
    t.same(ranA.p.lastRun(), { ...run, registries: { [R]: { questions: 3, requests: 3, newer: 2, same: 1, errors: 0 } } })

    // The other replica looks again when the Lease would have expired, and finds the run recorded.
    await advance(31_000, a, b)
    t.equal((await a.metric('mirrorhook_prewarm_runs_total')) + (await b.metric('mirrorhook_prewarm_runs_total')), 1, 'still one run')
    await a.p.stop()
    await b.p.stop()
  })

  t.test('a scheduled time missed while no replica ran is caught up at start-up', async (t) => {
    // A day passes with nobody running: 2030-11-29T19:00Z is missed.
    await advance(24 * HOUR)
    const late = replica('replica-late')
    late.p.start()
    await advance(0, late)
    t.equal(await late.metric('mirrorhook_prewarm_runs_total', { result: 'ok' }), 1)
    t.equal(await lastScheduled('mirrorhook-prewarm'), '2030-11-29T19:00:00.000Z')
    // Started when the replica looked (31 s after the start of the day's minute), for the time it missed.
    t.same(late.lines.filter((l) => l.msg === 'pre-warm run done').map(fields), [
      {
        scheduledFor: '2030-11-29T19:00:00.000Z',
        startedAt: '2030-11-29T19:00:31.000Z',
        by: 'replica-late',
        finishedAt: '2030-11-29T19:00:31.000Z',
        result: 'ok',
        namespaces: 1,
        workloads: 2,
        containers: 3,
        images: 5,
        newerTags: 2,
        keepUntil: '2030-11-30T20:00:00.000Z',
        durationMs: 0,
      },
    ])
    await late.p.stop()
  })

  t.test('the registry down: one log line and a metric, current images still warmed, the newest asked again next run', async (t) => {
    const r = replica('replica-c')
    r.p.start()
    await advance(0, r)
    await reg.stop()
    const next = Date.parse('2030-11-30T19:00:00Z') - clock.now()
    await advance(next, r)
    t.equal(await r.metric('mirrorhook_prewarm_runs_total', { result: 'partial' }), 1)
    t.equal(await r.metric('mirrorhook_prewarm_registry_errors_total', { registry: R }), 1)
    const down = r.lines.filter((l) => String(l.msg).includes(`registry ${R} did not answer`))
    t.equal(down.length, 1, 'one clear line')
    const refused = `${R}/v2/shop/api/tags/list: connect ECONNREFUSED ${R}`
    t.same(fields(down[0]!), { registry: R, errors: 3, questions: 3, err: refused })
    t.same(
      [down[0]!.level, down[0]!.msg],
      [
        40,
        `pre-warm: registry ${R} did not answer (3 of 3 repositories failed: ${refused}); current images are still warmed, newest tags are asked again next run`,
      ],
    )
    t.same(r.p.lastRun(), {
      scheduledFor: '2030-11-30T19:00:00.000Z',
      startedAt: '2030-11-30T19:00:00.000Z',
      by: 'replica-c',
      finishedAt: '2030-11-30T19:00:00.000Z',
      result: 'partial',
      namespaces: 1,
      workloads: 2,
      containers: 3,
      images: 3,
      newerTags: 0,
      keepUntil: '2030-12-01T20:00:00.000Z',
      registries: { [R]: { questions: 3, requests: 0, newer: 0, same: 0, errors: 3, down: refused } },
    })
    t.equal(await lastScheduled('mirrorhook-prewarm'), '2030-11-30T19:00:00.000Z', 'the run completed: its time is recorded')

    // Back, with a newer version: the next run finds it.
    reg = await startRegistry({ dir, port })
    await pushImage(reg, 'shop/web', '1.3.0')
    await advance(24 * HOUR, r)
    t.equal(await r.metric('mirrorhook_prewarm_runs_total', { result: 'ok' }), 1)
    await waitFor('the cache of 1.3.0', async () => (await heldImages()).includes(`${R}/shop/web:1.3.0`), 60_000)
    t.same(r.p.lastRun(), {
      scheduledFor: '2030-12-01T19:00:00.000Z',
      startedAt: '2030-12-01T19:00:00.000Z',
      by: 'replica-c',
      finishedAt: '2030-12-01T19:00:00.000Z',
      result: 'ok',
      namespaces: 1,
      workloads: 2,
      containers: 3,
      images: 5,
      newerTags: 2,
      keepUntil: '2030-12-02T20:00:00.000Z',
      registries: { [R]: { questions: 3, requests: 3, newer: 2, same: 1, errors: 0 } },
    })
    await r.p.stop()
  })

  t.test('a mirrored registry: caches for the mirror references admission would write', async (t) => {
    const m = replica('replica-m', true, 'prewarm-mirrored')
    m.p.start()
    await advance(0, m)
    await advance(24 * HOUR, m)
    t.same(m.p.lastRun(), {
      scheduledFor: '2030-12-02T19:00:00.000Z',
      startedAt: '2030-12-02T19:00:00.000Z',
      by: 'replica-m',
      finishedAt: '2030-12-02T19:00:00.000Z',
      result: 'ok',
      namespaces: 1,
      workloads: 1,
      containers: 2,
      images: 4,
      newerTags: 2,
      keepUntil: '2030-12-03T20:00:00.000Z',
      registries: { [NAMED]: { questions: 2, requests: 2, newer: 2, same: 0, errors: 0 } },
    })
    const expected = [
      'mirror.example/corp/shop/web:1.1.0',
      'mirror.example/corp/shop/web:1.3.0',
      'mirror.example/corp/shop/api:v2.0.0',
      'mirror.example/corp/shop/api:v2.1.0',
    ]
    for (const image of expected) await waitFor(`the cache of ${image}`, async () => (await batchOf(image)) !== undefined, 60_000)
    t.same(
      (await heldImages()).filter((i) => i.startsWith('mirror.example/')),
      [...expected].sort(),
      'each mirror reference in one batch',
    )
    const cache = await batchOf('mirror.example/corp/shop/web:1.3.0')
    t.equal(
      JSON.parse(cache.metadata.annotations['mirrorhook.io/originals'])['mirror.example/corp/shop/web:1.3.0'],
      `${NAMED}/shop/web:1.3.0`,
      'the original reference recorded',
    )
    await m.p.stop()
  })

  t.test('mirrorhook prewarm --dry-run prints the same choice as the run and writes nothing', async (t) => {
    const file = path.join(dir, 'config.yaml')
    writeFileSync(file, toYaml(configInput(false, 'mirrorhook-prewarm')))
    const before = await cacheImages()
    const leaseVersion = async () =>
      (await c.request('GET', `/apis/coordination.k8s.io/v1/namespaces/${OWN}/leases/mirrorhook-prewarm`)).json().metadata.resourceVersion
    const leaseBefore = await leaseVersion()
    const env = { KUBECONFIG: c.kubeconfigPath, POD_NAMESPACE: OWN }
    const json = await runCli(['prewarm', '--dry-run', '-n', 'shop', '--config', file, '-o', 'json'], { env })
    t.equal(json.code, 0, json.stderr)
    const out = JSON.parse(json.stdout)
    // The batch holding each reference, as the cluster shows it.
    const holder = new Map(before.map((l) => [l.split(' ')[1]!, l.split(' ')[0]!]))
    const pull = (role: string, image: string) => [role, image, holder.get(image)]
    t.same(
      out.rows.map((r: any) => [r.workload, r.container, r.current, r.pulls.map((p: any) => [p.role, p.pull, p.imageCache])]),
      [
        [
          'shop/Deployment/web',
          'migrate',
          `${R}/shop/api:v2.0.0`,
          [pull('current', `${R}/shop/api:v2.0.0`), pull('newest', `${R}/shop/api:v2.1.0`)],
        ],
        [
          'shop/Deployment/web',
          'app',
          `${R}/shop/web:1.1.0`,
          [pull('current', `${R}/shop/web:1.1.0`), pull('newest', `${R}/shop/web:1.3.0`)],
        ],
        ['shop/Deployment/worker', 'run', `${R}/shop/worker:5.0.0`, [pull('current', `${R}/shop/worker:5.0.0`)]],
      ],
    )
    t.same(
      out.rows.map((r: any) => [r.tag, r.init]),
      [
        ['v2.1.0 (semver: version 2.1.0 (2 of 2 tags compared))', true],
        ['1.3.0 (semver: version 1.3.0 (3 of 5 tags compared))', false],
        ['5.0.0 is the newest (semver: version 5.0.0 (1 of 1 tags compared))', false],
      ],
    )
    t.same(
      out.rows.flatMap((r: any) => r.pulls.map((p: any) => [p.reference, p.decision])),
      [`${R}/shop/api:v2.0.0`, `${R}/shop/api:v2.1.0`, `${R}/shop/web:1.1.0`, `${R}/shop/web:1.3.0`, `${R}/shop/worker:5.0.0`].map((i) => [
        i,
        `as is: registry ${R} matches noProxy entry "loopback"`,
      ]),
    )
    t.same(
      [out.namespaces, out.workloads, out.registries],
      [['shop'], 2, { [R]: { questions: 3, requests: 3, newer: 2, same: 1, errors: 0 } }],
    )
    t.same(
      out.images,
      [`${R}/shop/api:v2.0.0`, `${R}/shop/api:v2.1.0`, `${R}/shop/web:1.1.0`, `${R}/shop/web:1.3.0`, `${R}/shop/worker:5.0.0`].map(
        (image) => ({
          image,
        }),
      ),
    )
    // The scheduled run chose the same: every ImageCache the dry run names exists.
    for (const row of out.rows)
      for (const p of row.pulls) t.ok(before.includes(`${p.imageCache} ${p.pull}`), `${p.pull} was warmed by the run`)
    const table = await runCli(['prewarm', '--dry-run', '-n', 'shop', '--config', file], { env })
    t.equal(table.code, 0, table.stderr)
    // The whole table; the columns' widths follow the registry address (127.0.0.1 and a 5-digit port) and the batch names.
    const batch = (image: string) => holder.get(`${R}/${image}`)
    const blank = ' '.repeat(143)
    t.equal(
      table.stdout,
      [
        'dry run: nothing is written. 1 namespace(s) [shop], 2 workload(s), 3 container(s), 5 image(s) to pull',
        '',
        'WORKLOAD                CONTAINER       CURRENT                            TAG CHOSEN (WHY)                                                    NODES PULL                                  IMAGECACHE',
        `shop/Deployment/web     migrate (init)  ${R}/shop/api:v2.0.0    v2.1.0 (semver: version 2.1.0 (2 of 2 tags compared))               current: ${R}/shop/api:v2.0.0    ${batch('shop/api:v2.0.0')}`,
        `${blank}newest: ${R}/shop/api:v2.1.0     ${batch('shop/api:v2.1.0')}`,
        `shop/Deployment/web     app             ${R}/shop/web:1.1.0     1.3.0 (semver: version 1.3.0 (3 of 5 tags compared))                current: ${R}/shop/web:1.1.0     ${batch('shop/web:1.1.0')}`,
        `${blank}newest: ${R}/shop/web:1.3.0      ${batch('shop/web:1.3.0')}`,
        `shop/Deployment/worker  run             ${R}/shop/worker:5.0.0  5.0.0 is the newest (semver: version 5.0.0 (1 of 1 tags compared))  current: ${R}/shop/worker:5.0.0  ${batch('shop/worker:5.0.0')}`,
        '',
        'REGISTRY         REPOSITORIES  REQUESTS  NEWER  NO NEWER  ERRORS',
        `${R}  3             3         2      1         0`,
        '',
      ].join('\n'),
      'the table names the batch holding each image',
    )
    t.same(await cacheImages(), before, 'no ImageCache written')
    t.equal(await leaseVersion(), leaseBefore, 'the Lease untouched')
  })
}
