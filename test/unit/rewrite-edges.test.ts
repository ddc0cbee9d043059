// The rewrite decision at its edges: each reason a source registry cannot go under a prefix
// mirror, the mirror's subdomains, the clipped grammar message, and each check of verify()
// with its exact message. Expected values are written out.
import t from 'tap'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy, type MirrorTarget } from '../../server/core/policy.js'
import { type ImageReference, tryParseNormalizedNamed } from '../../server/core/reference.js'
import { decideImage, staticReachability, verify } from '../../server/core/rewrite.js'

const policy = compilePolicy(resolveConfig({ registries: ['*'] } as ConfigInput, {}))
const view = staticReachability(policy)
const DIGEST = `sha256:${'a'.repeat(64)}`

t.test('sources a prefix mirror cannot express, each with its reason', async (t) => {
  const table: [string, string, string][] = [
    ['10.0.0.1/app:1', '10.0.0.1', 'an IP-address registry cannot be expressed in prefix mode'],
    ['10.0.0.1:5000/app:1', '10.0.0.1:5000', 'a registry with a port cannot be expressed in prefix mode'],
    ['registry:5000/app:1', 'registry:5000', 'a registry with a port cannot be expressed in prefix mode'],
    ['reg.example:443/app:1', 'reg.example:443', 'a registry with a port cannot be expressed in prefix mode'],
    ['[fe80::1]/app:1', '[fe80::1]', 'an IP-address registry cannot be expressed in prefix mode'],
    ['[fe80::1]:5000/app:1', '[fe80::1]:5000', 'a registry with a port cannot be expressed in prefix mode'],
    ['[FE80::A]/app:1', '[fe80::a]', 'an IP-address registry cannot be expressed in prefix mode'],
  ]
  for (const [image, registry, reason] of table) {
    t.strictSame(decideImage(image, policy, view), { action: 'keep', original: image, code: 'inexpressible', reason, registry }, image)
  }
  t.strictSame(
    decideImage('registry/app:1', policy, view),
    {
      action: 'rewrite',
      original: 'registry/app:1',
      rewritten: 'm.daocloud.io/docker.io/registry/app:1',
      registry: 'docker.io',
      reason: 'mode always',
    },
    'a dotless first component without a port is a Docker Hub path',
  )
  t.strictSame(
    decideImage('1.2.3.4.example/app:1', policy, view),
    {
      action: 'rewrite',
      original: '1.2.3.4.example/app:1',
      rewritten: 'm.daocloud.io/1.2.3.4.example/app:1',
      registry: '1.2.3.4.example',
      reason: 'mode always',
    },
    'a name that starts like an address is a name',
  )
  t.strictSame(decideImage('Quay.IO/org/app:1', policy, view), {
    action: 'rewrite',
    original: 'Quay.IO/org/app:1',
    rewritten: 'm.daocloud.io/quay.io/org/app:1',
    registry: 'quay.io',
    reason: 'mode always',
  })
})

t.test("the mirror's subdomains are never a source; names that only end like it are", async (t) => {
  t.strictSame(decideImage('docker.m.daocloud.io/x/y:1', policy, view), {
    action: 'keep',
    original: 'docker.m.daocloud.io/x/y:1',
    code: 'no-proxy',
    reason: 'registry docker.m.daocloud.io is a subdomain of mirror m.daocloud.io',
    registry: 'docker.m.daocloud.io',
  })
  t.equal(decideImage('Docker.M.DaoCloud.IO:443/x/y:1', policy, view).action === 'keep' && 'kept', 'kept', 'case and port do not matter')
  t.equal(decideImage('xm.daocloud.io/x/y:1', policy, view).action, 'rewrite', 'not a subdomain: no dot before')
  t.equal(decideImage('m.daocloud.io.evil.example/x:1', policy, view).action, 'rewrite')
  const ipMirror = compilePolicy(resolveConfig({ registries: ['*'], mirror: { prefix: '10.0.0.9:5000/cache' } } as ConfigInput, {}))
  t.equal(
    decideImage('ghcr.io/a/b:1', ipMirror, staticReachability(ipMirror)).action === 'rewrite' &&
      (decideImage('ghcr.io/a/b:1', ipMirror, staticReachability(ipMirror)) as { rewritten: string }).rewritten,
    '10.0.0.9:5000/cache/ghcr.io/a/b:1',
  )
  t.equal(decideImage('x.10.0.0.9/a/b:1', ipMirror, staticReachability(ipMirror)).action, 'rewrite', 'an address has no subdomains')
})

t.test('the grammar message is clipped at 200 characters', async (t) => {
  const image = `Bad Ref ${'x'.repeat(300)}`
  const d = decideImage(image, policy, view)
  const message = `invalid reference format: repository name (library/${image}) must be lowercase`
  t.strictSame(d, {
    action: 'keep',
    original: image,
    code: 'unparseable',
    reason: `invalid image reference: ${message.slice(0, 200)}…`,
    registry: undefined,
  })
  const short = decideImage('Bad Ref', policy, view)
  t.equal(short.reason, 'invalid image reference: invalid reference format: repository name (library/Bad Ref) must be lowercase')
  // 200 characters exactly: not clipped.
  const name = 'B'.repeat(200 - 'invalid reference format: repository name (library/) must be lowercase'.length)
  t.equal(
    decideImage(name, policy, view).reason,
    `invalid image reference: invalid reference format: repository name (library/${name}) must be lowercase`,
  )
})

function ref(image: string): ImageReference {
  const parsed = tryParseNormalizedNamed(image)
  if (!parsed.ok) throw new Error(image)
  return parsed.ref
}

t.test('verify: each check and its message', async (t) => {
  const mirror: MirrorTarget = policy.mirrors[0]!
  const tagged = ref('nginx:1.25')
  const digested = ref(`nginx:1.25@${DIGEST}`)
  const table: [string, ImageReference, string | undefined][] = [
    ['m.daocloud.io/docker.io/library/nginx:1.25', tagged, undefined],
    [`m.daocloud.io/docker.io/library/nginx:1.25@${DIGEST}`, digested, undefined],
    ['m.daocloud.io/docker.io/library/nginx:1.26', tagged, 'the mirrored reference would change the tag or digest'],
    ['m.daocloud.io/docker.io/library/nginx', tagged, 'the mirrored reference would change the tag or digest'],
    [`m.daocloud.io/docker.io/library/nginx:1.25@${DIGEST}`, tagged, 'the mirrored reference would change the tag or digest'],
    ['m.daocloud.io/docker.io/library/nginx:1.25', digested, 'the mirrored reference would change the tag or digest'],
    ['other.example/docker.io/library/nginx:1.25', tagged, 'the mirrored reference would not point at the mirror'],
    ['M.daocloud.io/docker.io/library/nginx:1.25', tagged, 'the mirrored reference would not point at the mirror'],
    [
      'm.daocloud.io/Bad/nginx:1.25',
      tagged,
      'the mirrored reference would be invalid (invalid reference format: repository name (Bad/nginx) must be lowercase)',
    ],
  ]
  for (const [candidate, r, expected] of table) t.equal(verify(candidate, r, mirror), expected, candidate)
  const hub = { repoPrefix: 'docker.io', domain: 'docker.io' } as MirrorTarget
  t.equal(verify('docker.io/library/nginx:1.25', tagged, hub), undefined)
  t.equal(verify('nginx:1.25', tagged, hub), 'the mirrored reference would not be canonical')
})
