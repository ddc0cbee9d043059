// Pull policy, private images, mirror credentials, 401/404 learning and kube-fledged's own
// pulls against a real kube-apiserver, with the webhook running under the chart's RBAC (its
// ServiceAccount's token) and registered through the project's webhook configuration.
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { KubeConfig } from '@kubernetes/client-node'
import { stringify } from 'yaml'
import { REPO_ROOT } from '../support/controlplane.js'
import { runCli, waitFor } from '../support/helpers.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { applyObject, createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const CHART = join(REPO_ROOT, 'charts', 'mirrorhook')
const NS = 'mirrorhook'
const SA = `system:serviceaccount:${NS}:mirrorhook`
const CONFIG = {
  mirror: {
    prefix: 'm.daocloud.io',
    hosts: { 'quay.io': 'harbor.corp.example/quay' },
    pullSecrets: { 'harbor.corp.example': 'harbor-pull' },
  },
  registries: ['*'],
  mode: 'always',
  pull: { secretResyncSeconds: 1 },
  // Nothing leaves the machine; learning from Pods is what this file tests.
  reachability: { probes: { enabled: false }, persistence: { enabled: false } },
  kubeFledged: { enabled: false },
  remediation: { enabled: false },
}
// What the chart's ValidatingAdmissionPolicy answers, as kubectl prints it.
const POLICY_DENIAL = (name: string) =>
  `The secrets "${name}" is invalid: : ValidatingAdmissionPolicy 'mirrorhook-pull-secret-copies' with binding 'mirrorhook-pull-secret-copies' ` +
  'denied request: mirrorhook may write only copies of its mirror pull Secrets outside its own namespace, and never their sources'
const DOCKER_CONFIG = (user: string) =>
  Buffer.from(JSON.stringify({ auths: { 'harbor.corp.example': { auth: Buffer.from(`${user}:secret`).toString('base64') } } })).toString(
    'base64',
  )

const cp = await withControlPlane(t)

async function must(r: Promise<{ code: number; stdout: string; stderr: string }>, what: string): Promise<string> {
  const result = await r
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}): ${result.stderr}${result.stdout}`)
  return result.stdout
}

if (cp) {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-pull-e2e-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  for (const [name, enabled] of [
    [NS, false],
    ['shop', true],
    ['learn', true],
    ['kube-fledged', false],
  ] as const) {
    await createNamespace(cp, name, enabled)
  }
  await applyObject(cp, {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { name: 'harbor-pull', namespace: NS },
    type: 'kubernetes.io/dockerconfigjson',
    data: { '.dockerconfigjson': DOCKER_CONFIG('robot') },
  })

  // The chart's RBAC for this configuration, applied for real.
  await writeFile(join(dir, 'values.yaml'), stringify({ config: CONFIG }))
  const rbac = await must(
    cp.helm([
      'template',
      'mirrorhook',
      CHART,
      '--namespace',
      NS,
      '-f',
      join(dir, 'values.yaml'),
      '--show-only',
      'templates/serviceaccount.yaml',
      '--show-only',
      'templates/rbac.yaml',
      '--show-only',
      'templates/pullsecrets.yaml',
    ]),
    'helm template',
  )
  await must(cp.kubectl(['apply', '-f', '-'], { input: rbac }), 'apply the chart RBAC')
  const token = (await must(cp.kubectl(['create', 'token', 'mirrorhook', '-n', NS, '--duration=1h']), 'token')).trim()
  const kubeconfigPath = join(dir, 'kubeconfig')
  await writeFile(
    kubeconfigPath,
    stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'e2e', cluster: { server: cp.server, 'certificate-authority-data': Buffer.from(cp.caPem).toString('base64') } }],
      users: [{ name: 'mirrorhook', user: { token } }],
      contexts: [{ name: 'sa', context: { cluster: 'e2e', user: 'mirrorhook', namespace: NS } }],
      'current-context': 'sa',
    }),
  )
  const kubeConfig = new KubeConfig()
  kubeConfig.loadFromFile(kubeconfigPath)
  const asMirrorhook = (args: string[], input?: string) => cp.kubectl(['--kubeconfig', kubeconfigPath, ...args], { input })

  const webhook = await startTestWebhook({
    config: CONFIG,
    extra: { kube: { kubeConfig, source: kubeconfigPath }, metricsPort: 0, env: { POD_NAMESPACE: NS } },
  })
  t.teardown(() => webhook.stop())
  const stateUrl = `http://127.0.0.1:${webhook.server.metricsPort}`

  const secretIn = async (namespace: string) => {
    const r = await cp.kubectl(['get', 'secret', 'harbor-pull', '-n', namespace, '-o', 'json'])
    return r.code === 0 ? JSON.parse(r.stdout) : undefined
  }
  // A copy must exist before a Pod there may name it.
  await waitFor('the pull Secret copied to shop', async () => (webhook.server.pullSecrets?.has('shop', 'harbor-pull') ? true : undefined))
  await registerWebhook(cp, webhook, 'shop')

  // `mirrorhook state` from the server, anchored whole: `registries` is its first part (a pattern), times, ages and
  // column widths are free. The one refusal is the 401 learned below.
  const T = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ'
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const stateOutput = (registries: string) =>
    new RegExp(
      `^${registries}\\n` +
        'MIRROR +FOR +HEALTH +REFUSALS +ALLOWLIST\\n' +
        `m\\.daocloud\\.io +prefix +unknown +1 +${esc('none (every repository; refusals are learned)')}\\n` +
        `harbor\\.corp\\.example/quay +quay\\.io +unknown +0 +${esc('none (every repository; refusals are learned)')}\\n` +
        '\\nNOT SERVED BY THE MIRROR +SINCE +COUNT +EVIDENCE\\n' +
        `m\\.daocloud\\.io/docker\\.io/acme/app +${T} \\(\\d+[sm] ago\\) +1 +${esc('unauthorized (pod learn/denied)')}\\n` +
        `\\nsource: ${esc(stateUrl)}/state, written ${T.replace('Z', '\\.\\d{3}Z')} by \\S+\\n$`,
    )

  async function create(object: unknown): Promise<any> {
    const r = await cp!.kubectl(['create', '-o', 'json', '-f', '-'], { input: JSON.stringify(object) })
    if (r.code !== 0) throw new Error(r.stderr)
    return { ...JSON.parse(r.stdout), warnings: r.stderr }
  }
  const pod = (namespace: string, name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, ...metadata },
    spec,
  })

  t.test('the ServiceAccount reads only its pull Secret and writes only its copies', async (t) => {
    const can = async (verb: string, resource: string, namespace: string) =>
      (await cp.kubectl(['auth', 'can-i', verb, resource, `--as=${SA}`, '-n', namespace])).stdout.trim()
    const allowed: [string, string, string][] = [
      ['get', 'secrets/harbor-pull', NS],
      ['create', 'secrets', 'shop'],
      ['get', 'secrets/harbor-pull', 'shop'],
      ['update', 'secrets/harbor-pull', 'shop'],
      ['delete', 'secrets/harbor-pull', 'shop'],
    ]
    const forbidden: [string, string, string][] = [
      ['get', 'secrets/other', NS],
      ['get', 'secrets/other', 'shop'],
      ['list', 'secrets', 'shop'],
      ['watch', 'secrets', 'shop'],
      ['update', 'secrets/other', 'shop'],
      ['delete', 'secrets/other', 'shop'],
      ['patch', 'secrets/harbor-pull', 'shop'],
    ]
    for (const [verb, resource, ns] of allowed) t.equal(await can(verb, resource, ns), 'yes', `may ${verb} ${resource} in ${ns}`)
    for (const [verb, resource, ns] of forbidden) t.equal(await can(verb, resource, ns), 'no', `may not ${verb} ${resource} in ${ns}`)

    // What RBAC cannot limit (create), the chart's ValidatingAdmissionPolicy does.
    const token = {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'admin-token', namespace: 'learn', annotations: { 'kubernetes.io/service-account.name': 'default' } },
      type: 'kubernetes.io/service-account-token',
    }
    const denied = await waitFor('the admission policy is in force', async () => {
      const r = await asMirrorhook(['create', '--dry-run=server', '-f', '-'], JSON.stringify(token))
      return r.code !== 0 && /ValidatingAdmissionPolicy/.test(r.stderr) ? r.stderr : undefined
    })
    t.equal(denied, `${POLICY_DENIAL('admin-token')}\n`)
    const unlabelled = { ...token, metadata: { name: 'harbor-pull', namespace: 'learn' }, type: 'kubernetes.io/dockerconfigjson' }
    const r = await asMirrorhook(
      ['create', '--dry-run=server', '-f', '-'],
      JSON.stringify({ ...unlabelled, data: { '.dockerconfigjson': DOCKER_CONFIG('x') } }),
    )
    t.same([r.code, r.stderr], [1, `${POLICY_DENIAL('harbor-pull')}\n`], 'an unlabelled Secret of the right name is refused too')
    // RBAC's update by name holds in every namespace, the source's too; the policy keeps the source read-only.
    t.equal(await can('update', 'secrets/harbor-pull', NS), 'yes')
    const source = JSON.parse(await must(cp.kubectl(['get', 'secret', 'harbor-pull', '-n', NS, '-o', 'json']), 'source'))
    const overwrite = await asMirrorhook(['replace', '--dry-run=server', '-f', '-'], JSON.stringify(source))
    t.same([overwrite.code, overwrite.stderr], [1, `${POLICY_DENIAL('harbor-pull')}\n`])
    t.equal(await can('delete', 'secrets/harbor-pull', NS), 'yes')
    const remove = await asMirrorhook(['delete', 'secret', 'harbor-pull', '-n', NS, '--dry-run=server'])
    t.same([remove.code, remove.stderr], [1, `${POLICY_DENIAL('harbor-pull')}\n`])
  })

  t.test('the copy: labelled, equal to its source, updated with it', async (t) => {
    const copy = await secretIn('shop')
    t.same(copy.metadata.labels, { 'app.kubernetes.io/managed-by': 'mirrorhook', 'mirrorhook.io/pull-secret-copy': 'true' })
    t.same(copy.metadata.annotations, { 'mirrorhook.io/pull-secret-source': `${NS}/harbor-pull` })
    t.same(Object.keys(copy.data), ['.dockerconfigjson'])
    t.equal(copy.type, 'kubernetes.io/dockerconfigjson')
    t.equal(copy.data['.dockerconfigjson'], DOCKER_CONFIG('robot'))
    await applyObject(cp, {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'harbor-pull', namespace: NS },
      type: 'kubernetes.io/dockerconfigjson',
      data: { '.dockerconfigjson': DOCKER_CONFIG('rotated') },
    })
    await waitFor('the copy follows its source', async () =>
      (await secretIn('shop'))?.data['.dockerconfigjson'] === DOCKER_CONFIG('rotated') ? true : undefined,
    )
    t.equal(webhook.server.pullSecrets?.has('learn', 'harbor-pull'), true, 'every opted-in namespace has one')
    t.equal(webhook.server.pullSecrets?.has('kube-fledged', 'harbor-pull'), false, 'no other')
    t.equal(await secretIn('kube-fledged'), undefined)
  })

  t.test('a credentialed mirror: stored with the mirror image and its pull Secret; Never kept with a warning', async (t) => {
    const created = await create(
      pod('shop', 'app', {
        containers: [
          { name: 'app', image: 'quay.io/org/app:1' },
          { name: 'local', image: 'nginx:1.25', imagePullPolicy: 'Never' },
        ],
      }),
    )
    t.same(
      created.spec.containers.map((c: { image: string }) => c.image),
      ['harbor.corp.example/quay/org/app:1', 'nginx:1.25'],
    )
    t.same(created.spec.imagePullSecrets, [{ name: 'harbor-pull' }])
    t.equal(created.spec.containers[1].imagePullPolicy, 'Never')
    t.equal(
      created.warnings,
      'Warning: mirrorhook: app: quay.io/org/app:1 -> harbor.corp.example/quay/org/app:1 (mode always; pull Secret harbor-pull)\n' +
        'Warning: mirrorhook: local: nginx:1.25 left unchanged: imagePullPolicy is Never: the node must already have the image under this name\n',
    )
  })

  t.test('a Pod with pull secrets of its own is kept when the mirror has no credentials', async (t) => {
    const created = await create(
      pod('shop', 'private', {
        imagePullSecrets: [{ name: 'dockerhub-login' }],
        containers: [
          { name: 'app', image: 'acme/private-app:3' },
          { name: 'quay', image: 'quay.io/org/app:1' },
        ],
      }),
    )
    t.same(
      created.spec.containers.map((c: { image: string }) => c.image),
      ['acme/private-app:3', 'harbor.corp.example/quay/org/app:1'],
    )
    t.same(created.spec.imagePullSecrets, [{ name: 'dockerhub-login' }, { name: 'harbor-pull' }])
    t.equal(
      created.warnings,
      'Warning: mirrorhook: app: acme/private-app:3 left unchanged: the Pod has imagePullSecrets and mirror m.daocloud.io has no pull Secret ' +
        'of its own (pull.privateImages is keep)\n' +
        'Warning: mirrorhook: quay: quay.io/org/app:1 -> harbor.corp.example/quay/org/app:1 (mode always; pull Secret harbor-pull)\n',
    )
  })

  t.test("a kube-fledged pull-Job Pod in kube-fledged's namespace gets its busybox from the mirror", async (t) => {
    const labels = {
      app: 'kubefledged',
      kubefledged: 'kubefledged-image-manager',
      imagecache: 'ic-web',
      controller: 'kubefledged-controller',
      'job-name': 'ic-web-x7k2p',
    }
    const mount = [{ name: 'tmp-bin', mountPath: '/tmp/bin' }]
    const created = await create(
      pod(
        'kube-fledged',
        'ic-web-x7k2p-abcde',
        {
          nodeSelector: { 'kubernetes.io/hostname': 'node-1' },
          initContainers: [
            {
              name: 'busybox',
              image: 'senthilrch/busybox:1.35.0',
              command: ['cp', '/bin/echo', '/tmp/bin'],
              volumeMounts: mount,
              imagePullPolicy: 'IfNotPresent',
            },
          ],
          containers: [
            {
              name: 'imagepuller',
              image: 'm.daocloud.io/docker.io/library/nginx:1.25',
              command: ['/tmp/bin/echo', 'Image pulled successfully!'],
              volumeMounts: mount,
              imagePullPolicy: 'IfNotPresent',
            },
          ],
          volumes: [{ name: 'tmp-bin', emptyDir: {} }],
          restartPolicy: 'Never',
          tolerations: [{ operator: 'Exists' }],
        },
        {
          labels,
          ownerReferences: [
            {
              apiVersion: 'batch/v1',
              kind: 'Job',
              name: 'ic-web-x7k2p',
              uid: '00000000-0000-0000-0000-000000000001',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
        },
      ),
    )
    t.equal(created.spec.initContainers[0].image, 'm.daocloud.io/docker.io/library/busybox:1.35.0')
    t.equal(created.spec.containers[0].image, 'm.daocloud.io/docker.io/library/nginx:1.25')
    // Other Pods of that namespace are not touched.
    const other = await create(pod('kube-fledged', 'other', { containers: [{ name: 'c', image: 'nginx:1.25' }] }))
    t.equal(other.spec.containers[0].image, 'nginx:1.25')
  })

  t.test("a mirror's 401 for a repository stops its rewriting and shows in mirrorhook state", async (t) => {
    const created = await create(pod('learn', 'denied', { containers: [{ name: 'app', image: 'acme/app:1' }] }))
    t.equal(created.spec.containers[0].image, 'm.daocloud.io/docker.io/acme/app:1')
    // What the kubelet writes when the mirror answers 401 (containerd's words).
    const message =
      'failed to pull and unpack image "m.daocloud.io/docker.io/acme/app:1": failed to resolve reference "m.daocloud.io/docker.io/acme/app:1": unexpected status from HEAD request to https://m.daocloud.io/v2/docker.io/acme/app/manifests/1: 401 Unauthorized'
    const status = {
      status: {
        phase: 'Pending',
        containerStatuses: [
          {
            name: 'app',
            image: 'm.daocloud.io/docker.io/acme/app:1',
            imageID: '',
            ready: false,
            restartCount: 0,
            state: { waiting: { reason: 'ErrImagePull', message } },
          },
        ],
      },
    }
    await must(
      cp.kubectl(['patch', 'pod', 'denied', '-n', 'learn', '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]),
      'status',
    )
    const state = await waitFor('the refusal in mirrorhook state', async () => {
      const r = await runCli(['state', '--url', stateUrl], { env: { HOME: process.env.HOME ?? '' } })
      return r.stdout.includes('m.daocloud.io/docker.io/acme/app') ? r.stdout : undefined
    })
    t.match(state, stateOutput('no registry state known yet\n'))
    const next = await create(pod('learn', 'next', { containers: [{ name: 'app', image: 'acme/app:1' }] }))
    t.equal(next.spec.containers[0].image, 'acme/app:1')
    t.match(
      next.warnings,
      new RegExp(
        `^${esc('Warning: mirrorhook: app: acme/app:1 left unchanged: mirror refused m.daocloud.io/docker.io/acme/app (unauthorized (pod learn/denied), since ')}${T}\\)\\n$`,
      ),
    )
  })

  t.test("kube-fledged's pull Job failing on its init image shows in mirrorhook state", async (t) => {
    const image = 'senthilrch/busybox:1.35.0'
    await create(
      pod(
        'kube-fledged',
        'ic-db-q9z8w-fghij',
        {
          initContainers: [{ name: 'busybox', image }],
          containers: [{ name: 'imagepuller', image: 'm.daocloud.io/docker.io/library/redis:7' }],
        },
        { labels: { app: 'kubefledged', kubefledged: 'kubefledged-image-manager', imagecache: 'ic-db', 'mirrorhook.io/skip': 'true' } },
      ),
    )
    const message =
      'failed to pull and unpack image "docker.io/senthilrch/busybox:1.35.0": failed to resolve reference "docker.io/senthilrch/busybox:1.35.0": failed to do request: Head "https://registry-1.docker.io/v2/senthilrch/busybox/manifests/1.35.0": dial tcp 1.2.3.4:443: i/o timeout'
    const status = {
      status: {
        phase: 'Pending',
        initContainerStatuses: [
          { name: 'busybox', image, imageID: '', ready: false, restartCount: 0, state: { waiting: { reason: 'ErrImagePull', message } } },
        ],
      },
    }
    await must(
      cp.kubectl([
        'patch',
        'pod',
        'ic-db-q9z8w-fghij',
        '-n',
        'kube-fledged',
        '--subresource=status',
        '--type=merge',
        '-p',
        JSON.stringify(status),
      ]),
      'status',
    )
    const state = await waitFor('the init image failure in mirrorhook state', async () => {
      const r = await runCli(['state', '--url', stateUrl], { env: { HOME: process.env.HOME ?? '' } })
      return r.stdout.includes('kube-fledged pull Job') ? r.stdout : undefined
    })
    t.match(
      state,
      stateOutput(
        'REGISTRY +STATE +SINCE +EXPIRES +EVIDENCE\\n' +
          `docker\\.io +unreachable +${T} \\(\\d+[sm] ago\\) +${T} +` +
          esc(
            'pod status: i/o timeout pulling senthilrch/busybox:1.35.0 (kube-fledged pull Job pod kube-fledged/ic-db-q9z8w-fghij, init image)',
          ) +
          `, since ${T}\\n`,
      ),
    )
  })

  t.test('a namespace that opts out loses its copy; new Pods there are not mutated', async (t) => {
    await createNamespace(cp, 'shop', false)
    await waitFor('the copy deleted', async () => ((await secretIn('shop')) === undefined ? true : undefined))
    t.equal(webhook.server.pullSecrets?.has('shop', 'harbor-pull'), false)
    t.equal((await secretIn(NS))?.data['.dockerconfigjson'], DOCKER_CONFIG('rotated'), 'the source stays')
    t.equal((await secretIn('learn'))?.data['.dockerconfigjson'], DOCKER_CONFIG('rotated'), 'other namespaces keep theirs')
    // The API server stops calling the webhook for shop once its namespace cache has the new labels: poll a
    // server-side dry run until a Pod comes back as sent, with no warning (a call would rewrite or warn).
    const sent = pod('shop', 'after-opt-out', { containers: [{ name: 'app', image: 'quay.io/org/app:1' }] })
    const stored = await waitFor('a Pod in shop admitted without the webhook', async () => {
      const r = await cp!.kubectl(['create', '--dry-run=server', '-o', 'json', '-f', '-'], { input: JSON.stringify(sent) })
      if (r.code !== 0 || r.stderr !== '') return undefined
      const o = JSON.parse(r.stdout)
      return o.spec.containers[0].image === 'quay.io/org/app:1' ? o : undefined
    })
    t.equal(stored.spec.containers[0].image, 'quay.io/org/app:1')
    t.equal(stored.spec.imagePullSecrets, undefined)
    t.equal(stored.metadata.annotations, undefined)
  })
}
