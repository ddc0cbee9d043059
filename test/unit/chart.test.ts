// The Helm chart without a cluster: helm lint, helm template for each TLS mode, and
// what the rendered manifests must say. Applying them to a real API server, and running
// the webhook under the chart's RBAC, is test/e2e/chart.test.ts.
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parse as parseYaml, parseAllDocuments } from 'yaml'
import { buildCli } from '../../server/cli/program.js'
import { resolveConfig } from '../../server/config/config.js'
import { defaultBinDir, REPO_ROOT } from '../support/controlplane.js'
import { isCI } from '../support/tap-cluster.js'

const CHART = join(REPO_ROOT, 'charts', 'mirrorhook')
const HELM = join(defaultBinDir(), 'helm')
const WEBHOOK_SOURCE = join(REPO_ROOT, 'webhook-config', 'mutating-webhook.yaml')

type Manifest = {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
  [key: string]: any
}

function helm(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(HELM, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        HELM_CACHE_HOME: join(tmpdir(), 'mirrorhook-helm-cache'),
        HELM_CONFIG_HOME: join(tmpdir(), 'mirrorhook-helm-config'),
      },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))
  })
}

async function render(values: Record<string, unknown> = {}, release = 'mirrorhook', namespace = 'mirrorhook'): Promise<Manifest[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-'))
  try {
    const file = join(dir, 'values.yaml')
    await writeFile(file, JSON.stringify(values))
    const r = await helm(['template', release, CHART, '--namespace', namespace, '-f', file])
    if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`)
    return parseAllDocuments(r.stdout)
      .map((d) => d.toJS() as Manifest | null)
      .filter((d): d is Manifest => d !== null)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

function find(manifests: Manifest[], kind: string, name?: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && (name === undefined || m.metadata.name === name))
  if (!found) throw new Error(`no ${kind} ${name ?? ''} in ${manifests.map((m) => `${m.kind}/${m.metadata.name}`).join(', ')}`)
  return found
}

const kinds = (manifests: Manifest[]) => manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort()

/** Parses the container args with the real `serve` command: unknown flags or bad values throw. */
async function parseServeArgs(args: string[]): Promise<Record<string, unknown>> {
  const program = buildCli().exitOverride()
  const serve = program.commands.find((c) => c.name() === 'serve')!
  serve.exitOverride()
  let captured: Record<string, unknown> = {}
  serve.action((opts: Record<string, unknown>) => {
    captured = opts
  })
  await program.parseAsync(['node', 'mirrorhook', ...args])
  return captured
}

if (!existsSync(HELM)) {
  const message = `helm not found at ${HELM}: run \`npm run k8s:build\``
  if (isCI()) t.fail(message)
  else t.plan(0, message)
} else {
  const defaults = await render()

  t.test('helm lint passes for the defaults and for each TLS mode', async (t) => {
    for (const args of [
      [],
      ['--set', 'tls.mode=cert-manager'],
      ['--set', 'tls.mode=secret', '--set', 'tls.secretName=own', '--set-string', 'tls.caBundle=-----BEGIN CERTIFICATE-----x'],
    ]) {
      const r = await helm(['lint', '--strict', CHART, ...args])
      t.equal(r.code, 0, `helm lint --strict ${args.join(' ')}`, { output: r.stdout + r.stderr })
    }
  })

  t.test('the chart copy of the webhook configuration is the file in webhook-config/', async (t) => {
    const copy = await readFile(join(CHART, 'files', 'mutating-webhook.yaml'), 'utf8')
    const source = await readFile(WEBHOOK_SOURCE, 'utf8')
    t.equal(
      copy,
      source,
      'identical; after editing webhook-config/mutating-webhook.yaml run: cp webhook-config/mutating-webhook.yaml charts/mirrorhook/files/',
    )
  })

  t.test('rendered webhook configuration: every setting from webhook-config/, only install fields differ', async (t) => {
    const source = parseYaml(await readFile(WEBHOOK_SOURCE, 'utf8'))
    for (const [release, namespace, values] of [
      ['mirrorhook', 'mirrorhook', {}],
      ['edge', 'infra', { tls: { mode: 'cert-manager' } }],
    ] as const) {
      const rendered = find(await render(values, release, namespace), 'MutatingWebhookConfiguration')
      const name = release === 'mirrorhook' ? 'mirrorhook' : `${release}-mirrorhook`
      t.equal(rendered.metadata.name, name)
      t.equal(rendered.webhooks.length, source.webhooks.length)
      for (const [i, webhook] of rendered.webhooks.entries()) {
        const expected = structuredClone(source.webhooks[i])
        expected.clientConfig.service = { ...expected.clientConfig.service, name, namespace }
        t.strictSame(webhook, expected, `${release}: webhook ${webhook.name} matches the source apart from its Service`)
      }
      t.strictSame(rendered.apiVersion, source.apiVersion)
    }
  })

  t.test('default install (self-managed TLS): exactly these objects', async (t) => {
    t.strictSame(kinds(defaults), [
      'ClusterRole/mirrorhook',
      'ClusterRoleBinding/mirrorhook',
      'ConfigMap/mirrorhook-config',
      'Deployment/mirrorhook',
      'MutatingWebhookConfiguration/mirrorhook',
      'PodDisruptionBudget/mirrorhook',
      'Role/mirrorhook-imagecaches',
      'Role/mirrorhook-remediation',
      'Role/mirrorhook-state',
      'Role/mirrorhook-tls',
      'RoleBinding/mirrorhook-imagecaches',
      'RoleBinding/mirrorhook-remediation',
      'RoleBinding/mirrorhook-state',
      'RoleBinding/mirrorhook-tls',
      'Service/mirrorhook',
      'ServiceAccount/mirrorhook',
    ])
    const webhook = find(defaults, 'MutatingWebhookConfiguration')
    t.equal(webhook.metadata.annotations, undefined, 'no cainjector annotation')
    t.equal(webhook.webhooks[0].clientConfig.caBundle, undefined, 'caBundle left to the webhook (and to Helm upgrades, which keep it)')
  })

  t.test('Deployment: replicas, spread, probes, hardening, and args the CLI accepts', async (t) => {
    const deployment = find(defaults, 'Deployment')
    const pod = deployment.spec.template.spec
    const container = pod.containers[0]
    t.equal(deployment.spec.replicas, 2)
    t.equal(deployment.spec.strategy.rollingUpdate.maxUnavailable, 0, 'a rollout never drops below the replica count')
    t.strictSame(pod.topologySpreadConstraints[0].topologyKey, 'kubernetes.io/hostname')
    t.strictSame(pod.topologySpreadConstraints[0].labelSelector.matchLabels, deployment.spec.selector.matchLabels)
    t.equal(
      deployment.spec.template.metadata.labels['app.kubernetes.io/name'],
      'mirrorhook',
      'the label the webhook uses to leave its own Pods alone',
    )
    t.strictSame(pod.securityContext.seccompProfile, { type: 'RuntimeDefault' })
    t.equal(pod.securityContext.runAsNonRoot, true)
    t.equal(container.securityContext.readOnlyRootFilesystem, true)
    t.equal(container.securityContext.allowPrivilegeEscalation, false)
    t.strictSame(container.securityContext.capabilities.drop, ['ALL'])
    t.strictSame(container.resources, { limits: { memory: '640Mi' }, requests: { cpu: '50m', memory: '256Mi' } })
    t.strictSame(container.readinessProbe.httpGet, { path: '/readyz', port: 'webhook', scheme: 'HTTPS' })
    t.strictSame(container.livenessProbe.httpGet, { path: '/healthz', port: 'webhook', scheme: 'HTTPS' })
    t.strictSame(
      container.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]),
      [
        ['webhook', 8443],
        ['metrics', 9090],
      ],
    )
    t.strictSame(container.env[0], { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } })

    const opts = await parseServeArgs(container.args)
    t.equal(opts.port, 8443)
    t.equal(opts.metricsPort, '9090')
    t.equal(opts.tlsMode, 'self-managed')
    t.equal(opts.tlsSecret, 'mirrorhook-tls')
    t.equal(
      opts.webhookConfigName,
      find(defaults, 'MutatingWebhookConfiguration').metadata.name,
      'patches the configuration the chart installs',
    )
    t.equal(opts.serviceName, find(defaults, 'Service').metadata.name, 'certificate names match the Service')
    t.equal(opts.config, undefined, 'no values.config: no --config, the built-in defaults apply')
    const certDir = opts.tlsCertDir as string
    const mount = container.volumeMounts.find((m: { mountPath: string }) => m.mountPath === certDir)
    t.ok(mount, 'the certificate folder is a mounted volume (the root filesystem is read-only)')
    t.strictSame(pod.volumes.find((v: { name: string }) => v.name === mount.name).emptyDir, { medium: 'Memory', sizeLimit: '1Mi' })

    const service = find(defaults, 'Service')
    t.strictSame(service.spec.selector, deployment.spec.selector.matchLabels)
    t.strictSame(
      service.spec.ports.map((p: { name: string; port: number; targetPort: string }) => [p.name, p.port, p.targetPort]),
      [
        ['webhook', 443, 'webhook'],
        ['metrics', 9090, 'metrics'],
      ],
    )
    t.equal(find(defaults, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.service.port, 443)
    const pdb = find(defaults, 'PodDisruptionBudget')
    t.equal(pdb.spec.minAvailable, 1)
    t.strictSame(pdb.spec.selector.matchLabels, deployment.spec.selector.matchLabels)
  })

  t.test('RBAC: exactly what the code does, names pinned where RBAC allows', async (t) => {
    const rules = (kind: string, name: string) => find(defaults, kind, name).rules
    t.strictSame(rules('ClusterRole', 'mirrorhook'), [
      {
        apiGroups: ['admissionregistration.k8s.io'],
        resources: ['mutatingwebhookconfigurations'],
        resourceNames: ['mirrorhook'],
        verbs: ['get', 'patch'],
      },
      { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['namespaces', 'events'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['pods/eviction'], verbs: ['create'] },
      { apiGroups: [''], resources: ['events'], verbs: ['create'] },
    ])
    t.equal(find(defaults, 'Role', 'mirrorhook-remediation').metadata.namespace, 'mirrorhook')
    t.strictSame(rules('Role', 'mirrorhook-remediation'), [
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['mirrorhook-remediation'], verbs: ['get', 'update'] },
    ])
    t.strictSame(rules('Role', 'mirrorhook-tls'), [
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['mirrorhook-tls'], verbs: ['get', 'update'] },
    ])
    t.strictSame(rules('Role', 'mirrorhook-state'), [
      { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
      { apiGroups: [''], resources: ['configmaps'], resourceNames: ['mirrorhook-reachability'], verbs: ['get', 'update'] },
    ])
    t.equal(find(defaults, 'Role', 'mirrorhook-imagecaches').metadata.namespace, 'kube-fledged')
    t.strictSame(rules('Role', 'mirrorhook-imagecaches'), [
      { apiGroups: ['kubefledged.io'], resources: ['imagecaches'], verbs: ['list', 'watch', 'create', 'patch', 'delete'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['mirrorhook-prepull'], verbs: ['get', 'update'] },
    ])
    for (const binding of defaults.filter((m) => m.kind.endsWith('Binding'))) {
      t.strictSame(
        binding.subjects,
        [{ kind: 'ServiceAccount', name: 'mirrorhook', namespace: 'mirrorhook' }],
        `${binding.kind}/${binding.metadata.name} binds the chart's ServiceAccount`,
      )
      t.equal(binding.roleRef.name, find(defaults, binding.kind.replace('Binding', ''), binding.roleRef.name).metadata.name)
    }
  })

  t.test('RBAC follows the configuration', async (t) => {
    const config = {
      kubeFledged: { enabled: true, namespace: 'fledged' },
      reachability: { persistence: { configMap: 'state', namespace: 'ops' }, learning: { enabled: false } },
    }
    const rendered = await render({ config })
    t.equal(find(rendered, 'Role', 'mirrorhook-imagecaches').metadata.namespace, 'fledged')
    t.equal(find(rendered, 'Role', 'mirrorhook-state').metadata.namespace, 'ops')
    t.strictSame(find(rendered, 'Role', 'mirrorhook-state').rules[1].resourceNames, ['state'])
    t.notOk(
      find(rendered, 'ClusterRole').rules.some(
        (r: { resources: string[]; verbs: string[] }) => r.resources.includes('events') && r.verbs.includes('watch'),
      ),
      'no learning: no Event watch (remediation only creates Events)',
    )
    const nodeRules = (rendered: Manifest[]) =>
      find(rendered, 'ClusterRole').rules.filter((r: { resources: string[] }) => r.resources.includes('nodes'))
    t.strictSame(nodeRules(rendered), [{ apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] }], 'pre-pull on: the Node watch')
    t.strictSame(nodeRules(await render({ config: { kubeFledged: { nodes: { enabled: false } } } })), [], 'node refresh off: no Node watch')
    t.strictSame(nodeRules(await render({ config: { kubeFledged: { enabled: false } } })), [], 'pre-pull off: no Node watch')
    const off = await render({
      config: { kubeFledged: { enabled: false }, reachability: { enabled: false }, remediation: { enabled: false } },
      tls: { mode: 'cert-manager' },
    })
    t.strictSame(
      kinds(off).filter((k) => /Role/.test(k)),
      [],
      'nothing to read or write in the API: no RBAC at all',
    )
  })

  t.test('RBAC follows the remediation configuration: patch pods only with the patch method', async (t) => {
    const clusterRules = async (config: object) => find(await render({ config }), 'ClusterRole').rules
    const podRules = (rules: { resources: string[]; verbs: string[] }[]) =>
      rules.filter((r) => r.resources.some((x) => x.startsWith('pods'))).map((r) => [r.resources, r.verbs])
    t.strictSame(podRules(await clusterRules({})), [
      [['pods'], ['list', 'watch']],
      [['pods/eviction'], ['create']],
    ])
    const patchRule = [['pods'], ['get', 'patch']]
    t.strictSame(podRules(await clusterRules({ remediation: { method: 'patch' } })), [
      [['pods'], ['list', 'watch']],
      [['pods/eviction'], ['create']],
      patchRule,
    ])
    t.strictSame((await clusterRules({ remediation: { barePods: 'patch' } })).at(-1), {
      apiGroups: [''],
      resources: ['pods'],
      verbs: ['get', 'patch'],
    })
    const alone = await render({
      config: { kubeFledged: { enabled: false }, reachability: { enabled: false }, remediation: { lease: 'one' } },
    })
    t.strictSame(find(alone, 'ClusterRole').rules.slice(1), [
      { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['namespaces'], verbs: ['list', 'watch'] },
      { apiGroups: [''], resources: ['pods/eviction'], verbs: ['create'] },
      { apiGroups: [''], resources: ['events'], verbs: ['create'] },
    ])
    t.strictSame(find(alone, 'Role', 'mirrorhook-remediation').rules[1].resourceNames, ['one'])
    const off = await render({ config: { remediation: { enabled: false } } })
    t.notOk(kinds(off).includes('Role/mirrorhook-remediation'), 'remediation off: no Lease')
    t.strictSame(podRules(find(off, 'ClusterRole').rules), [[['pods'], ['list', 'watch']]])
  })

  t.test('the configuration: a ConfigMap the server accepts, and a checksum that rolls the Pods', async (t) => {
    const config = {
      mirror: { prefix: 'mirror.corp.example' },
      noProxy: ['.corp.example'],
      mode: 'always',
      kubeFledged: { enabled: false },
    }
    const rendered = await render({ config })
    const text = find(rendered, 'ConfigMap').data['config.yaml'] as string
    const resolved = resolveConfig(parseYaml(text), { POD_NAMESPACE: 'mirrorhook' }, 'chart')
    t.equal(resolved.mirror.prefix, 'mirror.corp.example')
    t.strictSame(resolved.noProxy, ['.corp.example'])
    const opts = await parseServeArgs(find(rendered, 'Deployment').spec.template.spec.containers[0].args)
    t.equal(opts.config, '/etc/mirrorhook/config.yaml')
    const mount = find(rendered, 'Deployment').spec.template.spec.containers[0].volumeMounts.find(
      (m: { name: string }) => m.name === 'config',
    )
    t.equal(mount.mountPath, '/etc/mirrorhook')

    const checksum = (m: Manifest[]) => find(m, 'Deployment').spec.template.metadata.annotations['checksum/config']
    t.match(checksum(rendered), /^[0-9a-f]{64}$/)
    t.not(checksum(rendered), checksum(defaults), 'another configuration, another checksum')
    t.equal(checksum(await render({ config })), checksum(rendered), 'same configuration, same checksum')
    t.strictSame(parseYaml(find(defaults, 'ConfigMap').data['config.yaml']), {}, 'default: an empty file')
  })

  t.test('cert-manager mode: a CA of its own, the serving Certificate mounted, cainjector annotation', async (t) => {
    const rendered = await render({ tls: { mode: 'cert-manager' } }, 'edge', 'infra')
    t.strictSame(
      kinds(rendered).filter((k) => /Issuer|Certificate/.test(k)),
      ['Certificate/edge-mirrorhook', 'Certificate/edge-mirrorhook-ca', 'Issuer/edge-mirrorhook-ca', 'Issuer/edge-mirrorhook-selfsigned'],
    )
    const ca = find(rendered, 'Certificate', 'edge-mirrorhook-ca')
    t.equal(ca.spec.isCA, true)
    t.equal(ca.spec.issuerRef.name, 'edge-mirrorhook-selfsigned')
    t.equal(find(rendered, 'Issuer', 'edge-mirrorhook-ca').spec.ca.secretName, ca.spec.secretName)
    const serving = find(rendered, 'Certificate', 'edge-mirrorhook')
    t.equal(serving.spec.issuerRef.name, 'edge-mirrorhook-ca')
    t.strictSame(
      serving.spec.dnsNames,
      ['edge-mirrorhook.infra.svc', 'edge-mirrorhook.infra.svc.cluster.local'],
      'the name the API server calls: <service>.<namespace>.svc',
    )
    t.equal(serving.spec.renewBefore, '720h')
    const webhook = find(rendered, 'MutatingWebhookConfiguration')
    t.equal(webhook.metadata.annotations?.['cert-manager.io/inject-ca-from'], 'infra/edge-mirrorhook')

    const pod = find(rendered, 'Deployment').spec.template.spec
    const opts = await parseServeArgs(pod.containers[0].args)
    t.equal(opts.tlsMode, undefined)
    const volume = pod.volumes.find((v: { secret?: { secretName: string } }) => v.secret)
    t.equal(volume.secret.secretName, serving.spec.secretName, 'mounts the Secret cert-manager writes')
    const mount = pod.containers[0].volumeMounts.find((m: { name: string }) => m.name === volume.name)
    t.equal(opts.tlsCert, `${mount.mountPath}/tls.crt`)
    t.equal(opts.tlsKey, `${mount.mountPath}/tls.key`)
    t.equal(mount.readOnly, true)
    const clusterRules = find(rendered, 'ClusterRole').rules as { resources: string[] }[]
    t.notOk(
      clusterRules.some((r) => r.resources.includes('mutatingwebhookconfigurations')),
      'cainjector writes the caBundle, not the webhook',
    )
    t.notOk(
      rendered.some((m) => m.kind === 'Role' && m.metadata.name.endsWith('-tls')),
      'no Secret access',
    )

    const external = await render({
      tls: { mode: 'cert-manager', certManager: { issuerRef: { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' } } },
    })
    t.strictSame(
      kinds(external).filter((k) => /Issuer|Certificate/.test(k)),
      ['Certificate/mirrorhook'],
      'an existing issuer: only the serving Certificate',
    )
    t.strictSame(find(external, 'Certificate').spec.issuerRef, { name: 'corp-ca', kind: 'ClusterIssuer', group: 'cert-manager.io' })
  })

  t.test('secret mode: the given Secret and caBundle', async (t) => {
    const caBundle = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
    const rendered = await render({ tls: { mode: 'secret', secretName: 'corp-tls', caBundle } })
    t.equal(Buffer.from(find(rendered, 'MutatingWebhookConfiguration').webhooks[0].clientConfig.caBundle, 'base64').toString(), caBundle)
    t.equal(
      find(rendered, 'Deployment').spec.template.spec.volumes.find((v: { secret?: unknown }) => v.secret).secret.secretName,
      'corp-tls',
    )
    t.notOk(rendered.some((m) => m.kind === 'Issuer' || m.kind === 'Certificate'))
  })

  t.test('values.schema.json rejects what cannot work', async (t) => {
    const sortProblems = (text: string) => {
      const lines = text.split('\n')
      const problems = lines.filter((l) => l.startsWith('- at ')).sort()
      return [...lines.filter((l) => !l.startsWith('- at ')), ...problems].join('\n')
    }
    const refusal = (...problems: string[]) =>
      ["Error: values don't meet the specifications of the schema(s) in the following chart(s):", 'mirrorhook:', ...problems, '', ''].join(
        '\n',
      )
    for (const [args, expected] of [
      [['--set', 'tls.mode=letsencrypt'], refusal("- at '/tls/mode': value must be one of 'self-managed', 'cert-manager', 'secret'")],
      [['--set', 'replicaCount=0'], refusal("- at '/replicaCount': minimum: got 0, want 1")],
      [
        ['--set', 'tls.mode=secret'],
        refusal(
          "- at '/tls/caBundle': '' does not match pattern '-----BEGIN CERTIFICATE-----'",
          "- at '/tls/secretName': minLength: got 0, want 1",
        ),
      ],
      [['--set', 'ports.webhook=80'], refusal("- at '/ports/webhook': minimum: got 80, want 1,024")],
      [['--set', 'image.digest=latest'], refusal("- at '/image/digest': 'latest' does not match pattern '^(|sha256:[a-f0-9]{64})$'")],
      [['--set', 'tlss.mode=x'], refusal("- at '': additional properties 'tlss' not allowed")],
    ] as const) {
      const r = await helm(['template', 'x', CHART, ...args])
      t.equal(r.code, 1, `${args.join(' ')} is refused`)
      // helm lists the problems of one object in Go map order, which varies between runs.
      t.equal(sortProblems(r.stderr), sortProblems(expected))
    }
  })

  t.test('optional ServiceMonitor scrapes the metrics port', async (t) => {
    t.notOk(
      defaults.some((m) => m.kind === 'ServiceMonitor'),
      'off by default (needs the Prometheus Operator)',
    )
    const rendered = await render({ serviceMonitor: { enabled: true, labels: { release: 'prom' } } })
    const monitor = find(rendered, 'ServiceMonitor')
    t.equal(monitor.metadata.labels?.release, 'prom')
    t.strictSame(monitor.spec.endpoints[0].port, 'metrics')
    t.strictSame(monitor.spec.selector.matchLabels, find(rendered, 'Deployment').spec.selector.matchLabels)
  })

  t.test('one replica: no PodDisruptionBudget (it would block every drain)', async (t) => {
    const rendered = await render({ replicaCount: 1 })
    t.notOk(rendered.some((m) => m.kind === 'PodDisruptionBudget'))
  })

  t.test('image: appVersion by default, a digest pins it', async (t) => {
    t.equal(find(defaults, 'Deployment').spec.template.spec.containers[0].image, 'mirrorhook:0.1.0')
    const digest = `sha256:${'a'.repeat(64)}`
    const pinned = await render({ image: { repository: 'registry.corp.example/mirrorhook', digest } })
    t.equal(find(pinned, 'Deployment').spec.template.spec.containers[0].image, `registry.corp.example/mirrorhook@${digest}`)
  })

  t.test('mirror pull Secrets: read by name at home, copies written by name elsewhere, create limited by a policy', async (t) => {
    const config = { mirror: { prefix: 'harbor.corp.example/proxy', pullSecrets: { 'harbor.corp.example': 'harbor-pull' } } }
    const rendered = await render({ config })
    t.strictSame(
      kinds(rendered).filter((k) => k.includes('pull-secret')),
      [
        'ClusterRole/mirrorhook-pull-secrets',
        'ClusterRoleBinding/mirrorhook-pull-secrets',
        'Role/mirrorhook-pull-secrets',
        'RoleBinding/mirrorhook-pull-secrets',
        'ValidatingAdmissionPolicy/mirrorhook-pull-secret-copies',
        'ValidatingAdmissionPolicyBinding/mirrorhook-pull-secret-copies',
      ],
    )
    t.strictSame(find(rendered, 'Role', 'mirrorhook-pull-secrets').rules, [
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['harbor-pull'], verbs: ['get'] },
    ])
    t.strictSame(find(rendered, 'ClusterRole', 'mirrorhook-pull-secrets').rules, [
      { apiGroups: [''], resources: ['secrets'], verbs: ['create'] },
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['harbor-pull'], verbs: ['get', 'update', 'delete'] },
      { apiGroups: [''], resources: ['namespaces'], verbs: ['list', 'watch'] },
    ])
    const policy = find(rendered, 'ValidatingAdmissionPolicy')
    t.equal(policy.spec.matchConditions[0].expression, 'request.userInfo.username == "system:serviceaccount:mirrorhook:mirrorhook"')
    t.equal(
      policy.spec.validations[0].expression,
      'request.namespace == "mirrorhook" ? !(variables.secret.metadata.name in ["harbor-pull"]) : variables.secret.metadata.name in ["harbor-pull"] && (request.operation == "DELETE" || variables.secret.type in ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"]) && has(variables.secret.metadata.labels) && "mirrorhook.io/pull-secret-copy" in variables.secret.metadata.labels',
    )
    t.equal(kinds(defaults).filter((k) => k.includes('pull-secret')).length, 0, 'nothing without mirror.pullSecrets')
  })

  t.test("kube-fledged's pull-Job Pods: the second webhook selects kubeFledged.namespace", async (t) => {
    const rendered = find(await render({ config: { kubeFledged: { namespace: 'fledged' } } }), 'MutatingWebhookConfiguration')
    const kf = rendered.webhooks.find((w: { name: string }) => w.name === 'kubefledged-pods.mirrorhook.io')
    t.strictSame(kf.namespaceSelector.matchExpressions[0], { key: 'kubernetes.io/metadata.name', operator: 'In', values: ['fledged'] })
    t.strictSame(kf.rules[0].operations, ['CREATE'])
  })
}
