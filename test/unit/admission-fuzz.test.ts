// Property test of /mutate: random, odd and hostile Pods, and what must hold for every answer.
// Seeded: a failure names its seed and case; MIRRORHOOK_FUZZ_SEED=<seed> replays the same cases
// (MIRRORHOOK_FUZZ_CASES sets how many).
import t from 'tap'
import jsonpatch from 'fast-json-patch'
import { isDeepStrictEqual } from 'node:util'
import { pino } from 'pino'
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { tryParseNormalizedNamed } from '../../server/core/reference.js'
import { staticReachability } from '../../server/core/rewrite.js'
import { buildWebhookApp } from '../../server/http/app.js'
import { Readiness } from '../../server/observability/readiness.js'
import { Metrics } from '../../server/observability/metrics.js'
import { podCreateReview } from '../support/helpers.js'
import { prng } from '../support/prng.js'

const SEED = Number(process.env.MIRRORHOOK_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const CASES = Number(process.env.MIRRORHOOK_FUZZ_CASES ?? 3000)
const KEY = 'mirrorhook.io/original-images'
// k8s.io/apimachinery/pkg/api/validation: TotalAnnotationSizeLimitB, len(key) + len(value) in bytes.
const LIMIT = 256 * 1024
const FIELDS = ['initContainers', 'containers', 'ephemeralContainers'] as const
const bytes = (annotations: Record<string, unknown>) =>
  Object.entries(annotations).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(String(v)), 0)

type Rng = ReturnType<typeof prng>

const NAMES = ['web', 'side', 'init', 'a', '__proto__', 'constructor', 'toString', 'hasOwnProperty', '', 'a/b~c', 'ñame', 'x'.repeat(300)]
const IMAGES = [
  'nginx:1.25',
  'nginx',
  'busybox@sha256:' + 'a'.repeat(64),
  'ghcr.io/org/app:v1',
  'ghcr.io/org/app:v1@sha256:' + 'b'.repeat(64),
  'registry.k8s.io/pause:3.9',
  'quay.io/a/b',
  'docker.io/library/redis:7',
  'index.docker.io/user/app:1',
  'GHCR.IO/org/app:1',
  'harbor.corp.example/team/api:2.1',
  'localhost:5000/x:1',
  '10.0.0.1:5000/x',
  '[fd00::1]:5000/x',
  'registry.corp:5000/app:1',
  'm.daocloud.io/docker.io/library/nginx:1',
  'sub.m.daocloud.io/x:1',
  'Nginx:Latest',
  'nginx:',
  ':tag',
  '@sha256:abc',
  'docker.io/' + 'a'.repeat(250) + ':1',
  'ghcr.io/' + 'a/'.repeat(120) + 'b',
  ' nginx',
  'nginx\n',
  'ghcr.io/org/app:' + 't'.repeat(128),
  'ghcr.io/org/app:' + 't'.repeat(129),
]
const ALPHABET = 'abcAZ09:/@._-~ '

function randomImage(r: Rng): unknown {
  const roll = r.int(10)
  if (roll < 6) return r.pick(IMAGES)
  if (roll < 8) return Array.from({ length: r.int(40) }, () => ALPHABET[r.int(ALPHABET.length)]).join('')
  if (roll < 9)
    return `${r.pick(['ghcr.io', 'quay.io', 'gcr.io', 'docker.io', 'registry.k8s.io', 'nvcr.io'])}/${r.pick(['a', 'org/app', 'x-y/z.w'])}:${r.int(100)}`
  return r.pick([undefined, null, 7, '', { nested: true }, ['nginx']])
}

function randomContainer(r: Rng, index: number): unknown {
  const roll = r.int(12)
  if (roll === 0) return r.pick([null, 0, 1, 'x', true, [], [{ name: 'x', image: 'nginx' }], {}])
  const container: Record<string, unknown> = {}
  const naming = r.int(10)
  if (naming < 5) container.name = `c${index}`
  else if (naming < 9) container.name = r.pick(NAMES)
  else if (naming === 9 && r.chance(0.5)) container.name = r.pick([5, null, {}])
  const image = randomImage(r)
  if (image !== undefined) container.image = image
  if (r.chance(0.3)) container.ports = [{ containerPort: 80 }]
  if (r.chance(0.2)) container.env = [{ name: 'IMAGE', value: typeof image === 'string' ? image : 'x' }]
  return container
}

function randomList(r: Rng): unknown {
  const roll = r.int(10)
  if (roll === 0) return r.pick(['x', 3, null, { 0: { name: 'a', image: 'nginx' } }])
  const length = roll < 8 ? r.int(5) : r.int(40)
  return Array.from({ length }, (_, i) => randomContainer(r, i))
}

function randomAnnotations(r: Rng): Record<string, unknown> | undefined {
  const roll = r.int(10)
  if (roll < 3) return undefined
  const annotations: Record<string, string> = {}
  if (r.chance(0.5)) annotations['team.example/owner'] = 'payments'
  if (r.chance(0.3)) {
    annotations[KEY] = r.pick([
      '{"web":"nginx:1.24"}',
      '{"__proto__":"redis:6","constructor":"redis:5"}',
      'not json',
      '[1,2]',
      '{"web":7}',
      '{}',
    ])
  }
  if (roll === 9 && r.chance(0.5)) {
    // Close to the limit (the Pod itself admissible), often over it once the annotation is added; ASCII or multi-byte.
    const filler = r.chance(0.5) ? 'x' : 'é'
    const room = LIMIT - bytes(annotations) - 'team.example/notes'.length - r.int(400)
    annotations['team.example/notes'] = filler.repeat(Math.floor(room / Buffer.byteLength(filler)))
  }
  return annotations
}

function randomPod(r: Rng) {
  const spec: Record<string, unknown> = {}
  for (const field of FIELDS) if (r.chance(field === 'containers' ? 0.95 : 0.5)) spec[field] = randomList(r)
  const metadata: Record<string, unknown> = { name: `pod-${r.int(1000)}` }
  const annotations = randomAnnotations(r)
  if (annotations) metadata.annotations = annotations
  if (r.chance(0.2)) metadata.labels = { app: 'web' }
  return r.chance(0.05) ? { spec } : { apiVersion: 'v1', kind: 'Pod', metadata, spec }
}

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)

// What a changed image must be: the same container's original, on the mirror, tag and digest kept.
function sameImageOnMirror(original: string, rewritten: string): string | undefined {
  const before = tryParseNormalizedNamed(original)
  const after = tryParseNormalizedNamed(rewritten)
  if (!after.ok) return `${rewritten} does not parse: ${after.error.message}`
  if (!before.ok) return `${original} did not parse, yet was rewritten`
  if (!['m.daocloud.io'].includes(after.ref.domain)) return `${rewritten} is not on the configured mirror`
  if (after.ref.tag !== before.ref.tag || after.ref.digest !== before.ref.digest)
    return `${rewritten} changed the tag or digest of ${original}`
  if (!after.ref.path.endsWith(`/${before.ref.path}`)) return `${rewritten} is not ${original} on the mirror`
  return undefined
}

function check(pod: Obj, subResource: string | undefined, body: any, uid: string): string[] {
  const problems: string[] = []
  const response = body?.response
  if (response?.uid !== uid) problems.push(`uid not echoed: ${JSON.stringify(response?.uid)}`)
  if (response?.allowed !== true) problems.push('not allowed')
  const ops = response?.patch ? JSON.parse(Buffer.from(response.patch, 'base64').toString('utf8')) : []
  if (response?.patch && response.patchType !== 'JSONPatch') problems.push('patch without patchType JSONPatch')
  let patched: any
  try {
    patched = jsonpatch.applyPatch(structuredClone(pod), ops, true, false).newDocument
  } catch (error) {
    return [...problems, `the patch does not apply: ${(error as Error).message}`]
  }
  if (subResource === 'ephemeralcontainers') {
    for (const op of ops)
      if (!/^\/spec\/ephemeralContainers\/\d+\/image$/.test(op.path)) problems.push(`subresource patch touches ${op.path}`)
  }

  // Every change is an image of a container, to that container's own original on the mirror.
  const restored = structuredClone(patched)
  const rewritten: [string, string][] = []
  const spec = isObj(pod.spec) ? pod.spec : {}
  for (const field of FIELDS) {
    const before = spec[field]
    const after = restored.spec?.[field]
    if (!Array.isArray(before) || !Array.isArray(after) || before.length !== after.length) continue
    before.forEach((container, index) => {
      const now = after[index]
      if (!isObj(container) || !isObj(now) || isDeepStrictEqual(now.image, container.image)) return
      if (typeof container.image !== 'string' || typeof now.image !== 'string') {
        problems.push(`${field}[${index}]: image ${JSON.stringify(container.image)} became ${JSON.stringify(now.image)}`)
        return
      }
      const wrong = sameImageOnMirror(container.image, now.image)
      if (wrong) problems.push(`${field}[${index}]: ${wrong}`)
      rewritten.push([typeof container.name === 'string' ? container.name : `#${index}`, container.image])
      now.image = container.image
    })
  }
  const beforeAnnotations: Obj | undefined = isObj(pod.metadata) && isObj(pod.metadata.annotations) ? pod.metadata.annotations : undefined
  const afterAnnotations: Obj | undefined =
    isObj(patched.metadata) && isObj(patched.metadata.annotations) ? patched.metadata.annotations : undefined
  const previous = beforeAnnotations && Object.hasOwn(beforeAnnotations, KEY) ? beforeAnnotations[KEY] : undefined
  const now = afterAnnotations && Object.hasOwn(afterAnnotations, KEY) ? afterAnnotations[KEY] : undefined
  if (isObj(restored.metadata)) {
    if (previous === undefined && isObj(restored.metadata.annotations)) delete restored.metadata.annotations[KEY]
    else if (isObj(restored.metadata.annotations)) restored.metadata.annotations[KEY] = previous
    if (
      beforeAnnotations === undefined &&
      isObj(restored.metadata.annotations) &&
      Object.keys(restored.metadata.annotations).length === 0
    ) {
      delete restored.metadata.annotations
    }
    if (!isObj(pod.metadata) && Object.keys(restored.metadata).length === 0) delete restored.metadata
  }
  if (!isDeepStrictEqual(restored, pod)) problems.push('something other than images and the annotation changed')

  // The annotation: exactly the originals of the rewritten containers, merged with what was there.
  const expected = new Map<string, string>()
  if (typeof previous === 'string') {
    try {
      const parsed: unknown = JSON.parse(previous)
      if (isObj(parsed)) for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') expected.set(k, v)
    } catch {
      // replaced
    }
  }
  for (const [name, image] of rewritten) expected.set(name, image)
  const encoded = `{${[...expected].map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`
  if (rewritten.length === 0 || subResource === 'ephemeralcontainers') {
    if (now !== previous) problems.push('the annotation changed though nothing was rewritten here')
  } else if (now === previous && now !== encoded) {
    const wouldBe =
      (beforeAnnotations
        ? bytes(beforeAnnotations) - (previous === undefined ? 0 : Buffer.byteLength(KEY) + Buffer.byteLength(String(previous)))
        : 0) +
      Buffer.byteLength(KEY) +
      Buffer.byteLength(encoded)
    if (wouldBe <= LIMIT) problems.push(`the annotation was left out though it fits (${wouldBe} bytes)`)
    if (!(response.warnings ?? []).some((w: string) => /original-images not written/.test(w)))
      problems.push('the annotation was left out without a warning')
  } else if (typeof now !== 'string' || !isDeepStrictEqual(Object.entries(JSON.parse(now)), [...expected])) {
    problems.push(`annotation ${String(now).slice(0, 200)} is not ${encoded.slice(0, 200)}`)
  }
  if (afterAnnotations && bytes(afterAnnotations) > LIMIT)
    problems.push(`annotations take ${bytes(afterAnnotations)} bytes, over the limit`)
  return problems
}

t.test(`random Pods: every answer allows, applies, and keeps each image with its container (seed ${SEED})`, async (t) => {
  t.comment(`seed ${SEED}: MIRRORHOOK_FUZZ_SEED=${SEED} replays these ${CASES} cases`)
  const configs: ConfigInput[] = [{}, { mode: 'always', registries: ['*'] }]
  const metrics = configs.map(() => new Metrics())
  const apps = await Promise.all(
    configs.map((input, i) => {
      const policy = compilePolicy(resolveConfig(input, {}))
      const context = { policy, reachability: staticReachability(policy) }
      return buildWebhookApp({
        logger: pino({ level: 'silent' }),
        metrics: metrics[i]!,
        readiness: new Readiness(),
        context: () => context,
      })
    }),
  )
  t.teardown(() => Promise.all(apps.map((a) => a.close())))

  const r = prng(SEED)
  const failures: string[] = []
  const seen = { mutated: 0, annotationLeftOut: 0, nonObjectEntries: 0, oddNames: 0, subresource: 0, updates: 0 }
  for (let i = 0; i < CASES; i++) {
    const pod = randomPod(r)
    const uid = `uid-${i}-${r.int(1e9)}`
    const roll = r.int(10)
    const operation = roll < 7 ? 'CREATE' : 'UPDATE'
    const subResource = roll === 9 ? 'ephemeralcontainers' : undefined
    const oldObject = operation === 'UPDATE' ? (r.chance(0.5) ? randomPod(r) : pod) : undefined
    const review = podCreateReview(uid, pod, {
      ...(subResource ? { subResource } : {}),
      operation,
      ...(oldObject ? { oldObject } : {}),
    })
    const res = await apps[i % apps.length]!.inject({ method: 'POST', url: '/mutate', payload: review })
    const body = res.statusCode === 200 ? res.json() : undefined
    const problems = res.statusCode === 200 ? check(pod, subResource, body, uid) : [`status ${res.statusCode}: ${res.body.slice(0, 200)}`]
    if (problems.length > 0) failures.push(`seed ${SEED} case ${i}: ${problems.join('; ')}\n  pod: ${JSON.stringify(pod).slice(0, 2000)}`)
    if (body?.response?.patch) seen.mutated++
    if ((body?.response?.warnings ?? []).some((w: string) => /not written/.test(w))) seen.annotationLeftOut++
    const lists = FIELDS.map((f) => (pod.spec as Obj)[f]).filter(Array.isArray)
    if (lists.some((l) => l.some((c) => !isObj(c)))) seen.nonObjectEntries++
    if (lists.some((l) => l.some((c) => isObj(c) && ['__proto__', 'constructor'].includes(c.name as string)))) seen.oddNames++
    if (subResource) seen.subresource++
    if (operation === 'UPDATE') seen.updates++
  }
  t.same(failures.slice(0, 3), [], `${failures.length} of ${CASES} cases broke a property (seed ${SEED})`)
  // Failing open would satisfy the properties above: none of these inputs may cause an internal error.
  const errors = await Promise.all(metrics.map(async (m) => (await m.errors.get()).values.reduce((n, v) => n + v.value, 0)))
  t.same(errors, [0, 0], 'no internal error, so no answer was a fail-open one')
  // The generator reaches the interesting cases at all (a few thousand cases hit each many times).
  t.comment(JSON.stringify(seen))
  for (const [what, count] of Object.entries(seen)) t.ok(count >= CASES / 100, `${what}: ${count} cases`)
})
