// mirrorhook registered with a real kube-apiserver through the project's own
// MutatingWebhookConfiguration; real Pods created through the API.
import t from 'tap'
import { withControlPlane } from '../support/tap-cluster.js'
import { applyObject, createNamespace, registerWebhook, startTestWebhook, type TestWebhook } from '../support/webhook.js'

const DIGEST = `sha256:${'d'.repeat(64)}`
const ORIGINALS = 'mirrorhook.io/original-images'

const cp = await withControlPlane(t)

if (cp) {
  const config = {
    mirror: { prefix: 'm.daocloud.io' },
    registries: ['*'],
    noProxy: ['.corp.example'],
    // Mode always needs no registry state; no probe leaves the machine.
    reachability: { probes: { enabled: false } },
  }
  let webhook: TestWebhook & { devCertDir: string } = await startTestWebhook({ config })
  t.teardown(() => webhook.stop())
  await createNamespace(cp, 'shop', true)
  await createNamespace(cp, 'plain', false)
  await registerWebhook(cp, webhook, 'shop')

  const pod = (namespace: string, name: string, spec: Record<string, unknown>, labels: Record<string, string> = {}) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec,
  })

  async function create(object: unknown): Promise<any> {
    const r = await cp!.kubectl(['create', '-o', 'json', '-f', '-'], { input: JSON.stringify(object) })
    if (r.code !== 0) throw new Error(r.stderr)
    return { ...JSON.parse(r.stdout), warnings: r.stderr }
  }

  async function get(namespace: string, name: string): Promise<any> {
    const r = await cp!.kubectl(['get', 'pod', '-n', namespace, name, '-o', 'json'])
    if (r.code !== 0) throw new Error(r.stderr)
    return JSON.parse(r.stdout)
  }

  t.test('an opted-in namespace: stored with mirror images and the original-images annotation', async (t) => {
    const created = await create(
      pod('shop', 'web', {
        initContainers: [
          { name: 'init-1', image: 'busybox:1.36' },
          { name: 'init-2', image: `ghcr.io/org/migrate@${DIGEST}` },
        ],
        containers: [
          { name: 'web', image: 'nginx:1.25' },
          { name: 'side', image: `quay.io/org/side:2@${DIGEST}` },
        ],
      }),
    )
    const stored = await get('shop', 'web')
    t.same(
      stored.spec.initContainers.map((c: { image: string }) => c.image),
      ['m.daocloud.io/docker.io/library/busybox:1.36', `m.daocloud.io/ghcr.io/org/migrate@${DIGEST}`],
    )
    t.same(
      stored.spec.containers.map((c: { image: string }) => c.image),
      ['m.daocloud.io/docker.io/library/nginx:1.25', `m.daocloud.io/quay.io/org/side:2@${DIGEST}`],
    )
    t.same(JSON.parse(stored.metadata.annotations[ORIGINALS]), {
      'init-1': 'busybox:1.36',
      'init-2': `ghcr.io/org/migrate@${DIGEST}`,
      web: 'nginx:1.25',
      side: `quay.io/org/side:2@${DIGEST}`,
    })
    t.equal(
      created.warnings,
      [
        'Warning: mirrorhook: init-1: busybox:1.36 -> m.daocloud.io/docker.io/library/busybox:1.36 (mode always)',
        `Warning: mirrorhook: init-2: ghcr.io/org/migrate@${DIGEST} -> m.daocloud.io/ghcr.io/org/migrate@${DIGEST} (mode always)`,
        'Warning: mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
        `Warning: mirrorhook: side: quay.io/org/side:2@${DIGEST} -> m.daocloud.io/quay.io/org/side:2@${DIGEST} (mode always)`,
        '',
      ].join('\n'),
    )
  })

  t.test(
    'a Pod whose annotations are near the 256 KiB limit is still admitted: the image rewritten, the annotation left out',
    async (t) => {
      // The API server refuses annotations over 256 KiB in total (len(key) + len(value)); this Pod is 16 bytes under.
      const key = 'team.example/notes'
      const near = pod('shop', 'annotated', { containers: [{ name: 'web', image: 'nginx:1.25' }] })
      ;(near.metadata as Record<string, unknown>).annotations = { [key]: 'x'.repeat(256 * 1024 - key.length - 16) }
      const created = await create(near)
      const stored = await get('shop', 'annotated')
      t.equal(stored.spec.containers[0].image, 'm.daocloud.io/docker.io/library/nginx:1.25')
      t.same(Object.keys(stored.metadata.annotations), [key], 'no original-images annotation')
      t.equal(
        created.warnings,
        [
          "Warning: mirrorhook: annotation mirrorhook.io/original-images not written: the Pod's annotations would take 262177 bytes, " +
            "over the API server's 256 KiB limit; the originals are in the rewrite warnings and the webhook log",
          'Warning: mirrorhook: web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
          '',
        ].join('\n'),
      )
    },
  )

  t.test('left alone: a namespace without the label, kube-system, and a Pod labelled skip', async (t) => {
    const spec = { containers: [{ name: 'c', image: 'nginx:1.25' }] }
    await create(pod('plain', 'p1', spec))
    t.equal((await get('plain', 'p1')).spec.containers[0].image, 'nginx:1.25', 'namespace without the label')

    // Even when kube-system carries the label, the server's own exclusion holds.
    await createNamespace(cp, 'kube-system', true)
    t.teardown(() => createNamespace(cp, 'kube-system', false))
    await create(pod('kube-system', 'p2', spec))
    const system = await get('kube-system', 'p2')
    t.equal(system.spec.containers[0].image, 'nginx:1.25', 'kube-system')
    t.equal(system.metadata.annotations, undefined, 'no annotations written')

    await create(pod('shop', 'p3', spec, { 'mirrorhook.io/skip': 'true' }))
    t.equal((await get('shop', 'p3')).spec.containers[0].image, 'nginx:1.25', 'skip label')
  })

  t.test('noProxy registries are untouched; an already-mirrored image is not rewritten again', async (t) => {
    await create(
      pod('shop', 'mixed', {
        containers: [
          { name: 'internal', image: 'registry.corp.example/team/app:1' },
          { name: 'mirrored', image: 'm.daocloud.io/docker.io/library/redis:7' },
          { name: 'public', image: 'redis:7' },
        ],
      }),
    )
    const stored = await get('shop', 'mixed')
    t.same(
      stored.spec.containers.map((c: { image: string }) => c.image),
      ['registry.corp.example/team/app:1', 'm.daocloud.io/docker.io/library/redis:7', 'm.daocloud.io/docker.io/library/redis:7'],
    )
    t.same(JSON.parse(stored.metadata.annotations[ORIGINALS]), { public: 'redis:7' })
  })

  t.test('kubectl apply --dry-run=server shows the mutation and prints the warnings; nothing is stored', async (t) => {
    const manifest = JSON.stringify(pod('shop', 'dry', { containers: [{ name: 'c', image: 'gcr.io/distroless/static:nonroot' }] }))
    const r = await cp.kubectl(['apply', '--dry-run=server', '-o', 'json', '-f', '-'], { input: manifest })
    t.equal(r.code, 0, r.stderr)
    const shown = JSON.parse(r.stdout)
    t.same(
      shown.spec.containers.map((c: { image: string }) => c.image),
      ['m.daocloud.io/gcr.io/distroless/static:nonroot'],
    )
    t.equal(shown.metadata.annotations[ORIGINALS], '{"c":"gcr.io/distroless/static:nonroot"}')
    t.equal(
      r.stderr,
      'Warning: mirrorhook: c: gcr.io/distroless/static:nonroot -> m.daocloud.io/gcr.io/distroless/static:nonroot (mode always)\n',
    )
    const stored = await cp.kubectl(['get', 'pod', '-n', 'shop', 'dry'])
    t.equal(stored.code, 1, 'dry-run stored nothing')
    t.equal(stored.stderr, 'Error from server (NotFound): pods "dry" not found\n')
  })

  t.test('an ephemeral container added through the subresource is rewritten', async (t) => {
    await create(pod('shop', 'debug-me', { containers: [{ name: 'app', image: 'nginx:1.25' }] }))
    const patch = {
      spec: { ephemeralContainers: [{ name: 'debugger', image: 'busybox:1.36', targetContainerName: 'app', stdin: true, tty: true }] },
    }
    const r = await cp.kubectl([
      'patch',
      'pod',
      '-n',
      'shop',
      'debug-me',
      '--subresource=ephemeralcontainers',
      '--type=strategic',
      '-p',
      JSON.stringify(patch),
    ])
    t.equal(r.code, 0, r.stderr)
    t.equal(r.stderr, 'Warning: mirrorhook: debugger: busybox:1.36 -> m.daocloud.io/docker.io/library/busybox:1.36 (mode always)\n')
    t.equal(r.stdout, 'pod/debug-me patched\n')
    const stored = await get('shop', 'debug-me')
    t.equal(stored.spec.ephemeralContainers[0].image, 'm.daocloud.io/docker.io/library/busybox:1.36')
    t.equal(stored.spec.containers[0].image, 'm.daocloud.io/docker.io/library/nginx:1.25')
    // The subresource carries only ephemeral containers; the original is in the warning, not the annotation.
    t.same(JSON.parse(stored.metadata.annotations[ORIGINALS]), { app: 'nginx:1.25' })
  })

  t.test('a Deployment keeps its Pod template as written (only Pods are mutated)', async (t) => {
    await applyObject(cp, {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'web', namespace: 'shop' },
      spec: {
        selector: { matchLabels: { app: 'web' } },
        template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] } },
      },
    })
    const r = await cp.kubectl(['get', 'deployment', '-n', 'shop', 'web', '-o', 'jsonpath={.spec.template.spec.containers[0].image}'])
    t.equal(r.stdout, 'nginx:1.25')
  })

  t.test('with the webhook stopped, Pods are admitted unchanged; admission resumes when it is back', async (t) => {
    const port = webhook.server.port
    await webhook.stop()
    const spec = { containers: [{ name: 'c', image: 'nginx:1.25' }] }
    const created = await create(pod('shop', 'while-down', spec))
    t.equal(created.spec.containers[0].image, 'nginx:1.25', 'failurePolicy Ignore: admitted unchanged')

    webhook = await startTestWebhook({ config, port, devCertDir: webhook.devCertDir })
    const deadline = Date.now() + 30_000
    let image = ''
    for (let i = 0; Date.now() < deadline; i++) {
      const again = await create(pod('shop', `after-${i}`, spec))
      image = again.spec.containers[0].image
      if (image !== 'nginx:1.25') break
      await new Promise((r) => setTimeout(r, 250))
    }
    t.equal(image, 'm.daocloud.io/docker.io/library/nginx:1.25', 'mutated again once the webhook is back')
  })
}
