// `prewarm --dry-run` on batched ImageCaches: each reference is shown with the batch whose list
// holds it, or as going into a new batch.
import t from 'tap'
import { batchesByImage, dryRunRows, formatDryRun, NEW_BATCH } from '../../server/cli/prewarm.js'
import { buildImageCache } from '../../server/prepull/imagecache.js'
import type { PlanRow } from '../../server/prewarm/plan.js'

const SETTINGS = { namespace: 'kube-fledged', imagePullSecrets: [] }
const WEB = 'mirror.example/corp/shop/web:1.1.0'
const WEB_NEW = 'mirror.example/corp/shop/web:1.3.0'
const API = 'mirror.example/corp/shop/api:v2.0.0'

t.test('batchesByImage: every image of every batch; the first batch by name when two hold one; other layouts skipped', async (t) => {
  const a = buildImageCache('mirrorhook-b-00001', [WEB, API], new Map(), SETTINGS)
  const b = buildImageCache('mirrorhook-a-00001', [API], new Map(), SETTINGS)
  const foreign = buildImageCache('mirrorhook-c-00001', [WEB_NEW], new Map(), SETTINGS)
  foreign.spec.cacheSpec = [{ images: [WEB_NEW] }, { images: [WEB_NEW], nodeSelector: { pool: 'gpu' } }]
  t.strictSame([...batchesByImage([a, b, foreign])].sort(), [
    [API, 'mirrorhook-a-00001'],
    [WEB, 'mirrorhook-b-00001'],
  ])
})

t.test('dryRunRows and the table: the batch holding a reference, or a new batch', async (t) => {
  const row: PlanRow = {
    workload: {
      kind: 'Deployment',
      namespace: 'shop',
      name: 'web',
      container: 'app',
      init: false,
      image: 'registry.corp.example/shop/web:1.1.0',
    },
    tag: '1.3.0 (semver: 3 tags)',
    pulls: [
      { role: 'current', reference: 'registry.corp.example/shop/web:1.1.0', pull: WEB, decision: 'mirrored' },
      { role: 'newest', reference: 'registry.corp.example/shop/web:1.3.0', pull: WEB_NEW, decision: 'mirrored' },
    ],
  }
  const rows = dryRunRows([row], new Map([[WEB, 'mirrorhook-b-00001']]))
  t.strictSame(
    rows[0]!.pulls.map((p) => [p.role, p.pull, p.imageCache]),
    [
      ['current', WEB, 'mirrorhook-b-00001'],
      ['newest', WEB_NEW, null],
    ],
  )
  t.strictSame(
    dryRunRows([row])[0]!.pulls.map((p) => p.imageCache),
    [null, null],
    'no batch listed: every reference goes into a new one',
  )
  const text = formatDryRun(rows, {}, 'dry run')
  t.equal(
    text,
    [
      'dry run',
      '',
      'WORKLOAD             CONTAINER  CURRENT                               TAG CHOSEN (WHY)        NODES PULL                                   IMAGECACHE',
      'shop/Deployment/web  app        registry.corp.example/shop/web:1.1.0  1.3.0 (semver: 3 tags)  current: mirror.example/corp/shop/web:1.1.0  mirrorhook-b-00001',
      '                                                                                              newest: mirror.example/corp/shop/web:1.3.0   (new, batched)',
      '',
    ].join('\n'),
  )
  t.equal(NEW_BATCH, '(new, batched)')
})
