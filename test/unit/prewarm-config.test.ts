import t from 'tap'
import { ConfigError } from '../../server/core/config.js'
import { resolveConfig } from '../../server/config/config.js'
import { selectorString } from '../../server/prewarm/config.js'

function problemsOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (error) {
    if (error instanceof ConfigError) return error.problems
    throw error
  }
  return []
}

t.test('prewarm: off by default, every kind, current images, nightly at 02:30 UTC', async (t) => {
  const c = resolveConfig(undefined, {})
  t.strictSame(c.prewarm, {
    enabled: false,
    schedule: '30 2 * * *',
    timeZone: 'UTC',
    namespaces: [],
    kinds: ['Deployments', 'StatefulSets', 'DaemonSets', 'CronJobs'],
    current: true,
    registries: {},
    lease: 'mirrorhook-prewarm',
    leaseDurationSeconds: 60,
    concurrency: 4,
  })
})

t.test("prewarm: the issue's example parses, with the registry entry's defaults", async (t) => {
  const c = resolveConfig({
    prewarm: {
      enabled: true,
      schedule: '30 2 * * *',
      timeZone: 'Asia/Shanghai',
      namespaces: ['shop'],
      namespaceSelector: { matchLabels: { team: 'web' } },
      kinds: ['Deployments', 'CronJobs'],
      current: false,
      registries: {
        'harbor.corp.example': {
          api: 'oci',
          order: 'semver',
          caFile: '/etc/mirrorhook/harbor-ca.pem',
          credentialsSecret: 'harbor-robot',
        },
        '127.0.0.1:5000': { api: 'harbor', order: 'push-time', include: ['^v\\d'], exclude: [] },
      },
    },
  })
  t.equal(c.prewarm.timeZone, 'Asia/Shanghai')
  t.strictSame(c.prewarm.kinds, ['Deployments', 'CronJobs'])
  t.equal(c.prewarm.current, false)
  t.strictSame(c.prewarm.registries['harbor.corp.example'], {
    api: 'oci',
    order: 'semver',
    exclude: ['^latest$'],
    caFile: '/etc/mirrorhook/harbor-ca.pem',
    credentialsSecret: 'harbor-robot',
  })
  t.strictSame(c.prewarm.registries['127.0.0.1:5000'], { api: 'harbor', order: 'push-time', include: ['^v\\d'], exclude: [] })
})

const refused: [string, unknown, string[]][] = [
  [
    'six fields',
    { schedule: '0 30 2 * * *' },
    ['prewarm.schedule: expected five fields (minute hour day-of-month month day-of-week), e.g. "30 2 * * *"; got "0 30 2 * * *"'],
  ],
  [
    'a nickname',
    { schedule: '@daily' },
    ['prewarm.schedule: expected five fields (minute hour day-of-month month day-of-week), e.g. "30 2 * * *"; got "@daily"'],
  ],
  ['a minute out of range', { schedule: '61 2 * * *' }, ['prewarm.schedule: not a valid cron expression: Invalid value for minute: 61']],
  ['an unknown time zone', { timeZone: 'Mars/Olympus' }, ['prewarm.timeZone: must be an IANA time zone name such as Asia/Shanghai or UTC']],
  [
    'enabled without namespaces',
    { enabled: true },
    ['prewarm.namespaces: name the namespaces to warm (namespaces and/or namespaceSelector)'],
  ],
  ['a bad namespace', { namespaces: ['Shop'] }, ['prewarm.namespaces[0]: must be a namespace name']],
  [
    'an unknown kind',
    { kinds: ['ReplicaSets'] },
    ['prewarm.kinds[0]: Invalid option: expected one of "Deployments"|"StatefulSets"|"DaemonSets"|"CronJobs"'],
  ],
  ['no kind', { kinds: [] }, ['prewarm.kinds: name at least one workload kind']],
  [
    'a URL as registry',
    { registries: { 'https://harbor.corp': { api: 'oci', order: 'semver' } } },
    ['prewarm.registries.https://harbor.corp: must be a registry host, with an optional port'],
  ],
  [
    'a bad registry entry',
    { registries: { 'harbor.corp': { api: 'quay', order: 'semver', exclude: ['('], extra: 1 } } },
    [
      'prewarm.registries.harbor.corp.api: Invalid option: expected one of "oci"|"harbor"',
      'prewarm.registries.harbor.corp.exclude[0]: must be a valid regular expression',
      'prewarm.registries.harbor.corp.extra: unknown key',
    ],
  ],
  [
    'a selector expression without values',
    { namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'In' }] } },
    ['prewarm.namespaceSelector.matchExpressions[0].values: In needs values'],
  ],
  ['an unknown key', { scheduel: '30 2 * * *' }, ['prewarm.scheduel: unknown key']],
]

for (const [name, prewarm, problems] of refused) {
  t.test(`prewarm refused: ${name}`, async (t) => {
    t.strictSame(
      problemsOf(() => resolveConfig({ prewarm })),
      problems,
    )
  })
}

t.test('a namespaceSelector becomes the labelSelector the API reads', async (t) => {
  t.equal(
    selectorString({
      matchLabels: { team: 'web', tier: 'front' },
      matchExpressions: [
        { key: 'env', operator: 'In', values: ['prod', 'stage'] },
        { key: 'legacy', operator: 'NotIn', values: ['yes'] },
        { key: 'owner', operator: 'Exists' },
        { key: 'frozen', operator: 'DoesNotExist' },
      ],
    }),
    'team=web,tier=front,env in (prod,stage),legacy notin (yes),owner,!frozen',
  )
  t.equal(selectorString({}), '')
})
