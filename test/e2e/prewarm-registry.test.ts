// Tag resolution against the real distribution registry (TLS on loopback): tag listing across
// `Link` pages, semver and build-time order, token auth, 429 + Retry-After, redirects.
import t from 'tap'
import { createTagResolver, registryEntrySchema } from '../../server/prewarm/registry/index.js'
import { checkBinaries } from '../support/controlplane.js'
import { isCI } from '../support/tap-cluster.js'
import { pushImage, startRegistry, tagManifest, type Registry } from '../support/registry.js'

const bins = checkBinaries(undefined, ['registry'])
if (!bins.ok) {
  if (isCI()) t.fail(`the registry binary is missing, and with CI=true that is a failure: ${bins.message}`)
  else t.plan(0, `skipped: ${bins.message}`)
} else {
  const reg: Registry = await startRegistry()
  t.teardown(() => reg.stop())

  t.test('semver order across pages of tags', async (t) => {
    const first = await pushImage(reg, 'shop/api', '1.0.0')
    // 25 versions, `latest` and a few non-versions; 4 tags a page.
    const versions = Array.from({ length: 24 }, (_, i) => `1.${Math.floor(i / 4)}.${i % 4}`).filter((v) => v !== '1.0.0')
    await tagManifest(reg, 'shop/api', first, [...versions, '1.10.0', '2.0.0-rc.1', 'latest', 'main', 'sha-0123abc'])
    const entry = registryEntrySchema.parse({ api: 'oci', order: 'semver' })
    const resolver = createTagResolver(reg.host, entry, { caPem: reg.caPem, pageSize: 4 })
    t.teardown(() => resolver.close())
    const r = await resolver.newest('shop/api', '1.2.3')
    t.same(r.newest, { tag: '1.10.0', order: 'semver', evidence: 'version 1.10.0 (14 of 29 tags compared)' })
    t.equal(r.reason, 'the highest version, above 1.2.3 (29 tags in 8 pages)')
    t.equal(r.requests, 8, 'one request per page, no auth')
    const none = await resolver.newest('shop/api', 'main')
    t.same(none, {
      reason: 'the current tag "main" is not a version, so no tag can be shown to be newer (29 tags in 8 pages)',
      requests: 8,
    })
    const missing = await resolver.newest('shop/nothing', '1.0.0')
    t.same(missing, { reason: `repository shop/nothing not found on ${reg.host}`, requests: 1 })
  })
}
