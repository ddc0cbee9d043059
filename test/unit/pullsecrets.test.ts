// The copies of the mirror pull Secrets, against an in-memory Secret store that answers as the
// API server does (404 on a missing Secret, 409 on create of an existing one, uid preconditions).
// The real API server, RBAC and admission policy are in test/e2e/pull.test.ts.
import t from 'tap'
import { KubeConfig, type V1Secret } from '@kubernetes/client-node'
import { pino } from 'pino'
import type { NamespaceHandler, OptedInNamespaces } from '../../server/kube/namespaces.js'
import { COPY_LABEL, PullSecretCopies } from '../../server/kube/pullsecrets.js'

class ApiException extends Error {
  constructor(readonly code: number) {
    super(`HTTP ${code}`)
  }
}

function store() {
  const secrets = new Map<string, V1Secret>()
  let uid = 0
  const calls: string[] = []
  const core = {
    async readNamespacedSecret({ name, namespace }: { name: string; namespace: string }) {
      calls.push(`get ${namespace}/${name}`)
      const s = secrets.get(`${namespace}/${name}`)
      if (!s) throw new ApiException(404)
      return structuredClone(s)
    },
    async createNamespacedSecret({ namespace, body }: { namespace: string; body: V1Secret }) {
      calls.push(`create ${namespace}/${body.metadata!.name}`)
      const key = `${namespace}/${body.metadata!.name}`
      if (secrets.has(key)) throw new ApiException(409)
      secrets.set(key, { ...structuredClone(body), metadata: { ...body.metadata, uid: `u${++uid}` } })
      return body
    },
    async replaceNamespacedSecret({ name, namespace, body }: { name: string; namespace: string; body: V1Secret }) {
      calls.push(`update ${namespace}/${name}`)
      const old = secrets.get(`${namespace}/${name}`)
      if (!old) throw new ApiException(404)
      secrets.set(`${namespace}/${name}`, { ...structuredClone(body), metadata: { ...body.metadata, uid: old.metadata?.uid } })
      return body
    },
    async deleteNamespacedSecret({
      name,
      namespace,
      body,
    }: {
      name: string
      namespace: string
      body?: { preconditions?: { uid?: string } }
    }) {
      calls.push(`delete ${namespace}/${name}`)
      const old = secrets.get(`${namespace}/${name}`)
      if (!old) throw new ApiException(404)
      if (body?.preconditions?.uid && body.preconditions.uid !== old.metadata?.uid) throw new ApiException(409)
      secrets.delete(`${namespace}/${name}`)
      return {}
    },
  }
  return { secrets, core, calls }
}

function namespaces(initial: string[]) {
  const names = new Set(initial)
  const handlers = new Set<NamespaceHandler>()
  const fake = {
    names: () => [...names].sort(),
    has: (ns: string | undefined) => ns !== undefined && names.has(ns),
    subscribe(h: NamespaceHandler) {
      handlers.add(h)
      return () => handlers.delete(h)
    },
  }
  return {
    fake: fake as unknown as OptedInNamespaces,
    optIn(ns: string) {
      names.add(ns)
      for (const h of handlers) h.add?.(ns)
    },
    optOut(ns: string) {
      names.delete(ns)
      for (const h of handlers) h.delete?.(ns)
    },
  }
}

const source = (user: string): V1Secret => ({
  metadata: { name: 'harbor-pull', namespace: 'mirrorhook', uid: 'src' },
  type: 'kubernetes.io/dockerconfigjson',
  data: { '.dockerconfigjson': Buffer.from(user).toString('base64') },
})

function copies(options: { alsoIn?: string[]; opted?: string[] } = {}) {
  const s = store()
  s.secrets.set('mirrorhook/harbor-pull', source('robot'))
  const ns = namespaces(options.opted ?? ['shop', 'blog'])
  const c = new PullSecretCopies(
    {
      kubeConfig: new KubeConfig(),
      namespaces: ns.fake,
      sourceNamespace: 'mirrorhook',
      names: ['harbor-pull'],
      excludedNamespaces: new Set(['kube-system', 'mirrorhook']),
      alsoIn: options.alsoIn,
      resyncMs: 3_600_000,
      logger: pino({ level: 'silent' }),
    },
    s.core as never,
  )
  return { ...s, ns, c }
}

t.test('copies into every opted-in namespace, labelled, and says so only once they exist', async (t) => {
  const { c, secrets, ns } = copies({ alsoIn: ['kube-fledged'] })
  t.equal(c.has('shop', 'harbor-pull'), false, 'nothing before the first pass')
  c.start()
  t.teardown(() => c.stop())
  await new Promise((r) => setImmediate(r))
  await c.idle()
  t.strictSame(c.copies('harbor-pull'), ['blog', 'kube-fledged', 'shop'])
  const copy = secrets.get('shop/harbor-pull')!
  t.equal(copy.metadata?.labels?.[COPY_LABEL], 'true')
  t.equal(copy.type, 'kubernetes.io/dockerconfigjson')
  t.strictSame(copy.data, source('robot').data)
  t.equal(c.has('kube-system', 'harbor-pull'), false)

  ns.optIn('kube-system')
  ns.optIn('news')
  await c.idle()
  t.equal(secrets.has('kube-system/harbor-pull'), false, 'an excluded namespace gets nothing')
  t.equal(c.has('news', 'harbor-pull'), true)

  ns.optOut('shop')
  t.equal(c.has('shop', 'harbor-pull'), false, 'not usable from the moment it opts out')
  await c.idle()
  t.equal(secrets.has('shop/harbor-pull'), false, 'deleted')
  ns.optOut('kube-fledged')
  await c.idle()
  t.equal(secrets.has('kube-fledged/harbor-pull'), true, "kube-fledged's namespace keeps its copy")
})

t.test("someone else's Secret of that name is used but never overwritten or deleted", async (t) => {
  const { c, secrets, ns, calls } = copies({ opted: ['shop'] })
  secrets.set('shop/harbor-pull', {
    metadata: { name: 'harbor-pull', namespace: 'shop', uid: 'theirs' },
    type: 'kubernetes.io/dockerconfigjson',
    data: { x: 'eQ==' },
  })
  c.start()
  t.teardown(() => c.stop())
  await new Promise((r) => setImmediate(r))
  await c.idle()
  t.equal(c.has('shop', 'harbor-pull'), true)
  t.strictSame(secrets.get('shop/harbor-pull')?.data, { x: 'eQ==' })
  ns.optOut('shop')
  await c.idle()
  t.strictSame(secrets.get('shop/harbor-pull')?.metadata?.uid, 'theirs')
  t.strictSame(
    calls.filter((x) => !x.startsWith('get')),
    [],
  )
})

t.test('a missing source: no namespace has it; a changed source updates the copies', async (t) => {
  const { c, secrets } = copies({ opted: ['shop'] })
  secrets.delete('mirrorhook/harbor-pull')
  c.start()
  t.teardown(() => c.stop())
  await new Promise((r) => setImmediate(r))
  await c.idle()
  t.equal(c.has('shop', 'harbor-pull'), false)
  t.equal(secrets.has('shop/harbor-pull'), false)

  secrets.set('mirrorhook/harbor-pull', source('rotated'))
  await (c as unknown as { resync(): Promise<void> }).resync()
  await c.idle()
  t.strictSame(secrets.get('shop/harbor-pull')?.data, source('rotated').data)
  secrets.set('mirrorhook/harbor-pull', source('again'))
  await (c as unknown as { resync(): Promise<void> }).resync()
  await c.idle()
  t.strictSame(secrets.get('shop/harbor-pull')?.data, source('again').data, 'an update of the copy')
})
