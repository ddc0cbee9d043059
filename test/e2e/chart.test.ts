// The Helm chart against a real kube-apiserver: every TLS mode's manifests pass a
// server-side dry run, the default install goes in for real, and the webhook runs
// with the chart's ServiceAccount token, able to do what it needs and nothing more.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseAllDocuments, stringify } from 'yaml'
import { freePort, REPO_ROOT, type ControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { applyObject, createNamespace } from '../support/webhook.js'

const CHART = join(REPO_ROOT, 'charts', 'mirrorhook')
const IMAGECACHE_CRD = join(REPO_ROOT, 'test', 'fixtures', 'kubefledged', 'imagecache-crd.yaml')
const NS = 'mirrorhook'
const SA = `system:serviceaccount:${NS}:mirrorhook`
// Everything on that can run without the internet: probes would reach real registries.
const CONFIG = { mirror: { prefix: 'm.daocloud.io' }, registries: ['*'], mode: 'always', reachability: { probes: { enabled: false } } }

// The check NOTES print, and NOTES as helm shows them after install and upgrade.
const CHECK = `kubectl -n <namespace> run mirrorhook-check --image=nginx:1.27 --dry-run=server -o jsonpath='{.spec.containers[0].image}{"\\n"}'`
const NOTES = `TEST SUITE: None
NOTES:
mirrorhook 0.1.0 is installed in namespace mirrorhook (2 replicas, TLS: self-managed).

1. Wait until it is ready:

     kubectl -n mirrorhook rollout status deployment/mirrorhook
     kubectl get mutatingwebhookconfiguration mirrorhook -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | head -c 40; echo

   The webhook creates Secret mirrorhook/mirrorhook-tls and writes the caBundle itself.
   That Secret is not part of the release: after \`helm uninstall\`, delete it with
     kubectl -n mirrorhook delete secret mirrorhook-tls

2. Opt a namespace in (nothing is rewritten elsewhere):

     kubectl label namespace <namespace> mirrorhook.io/enabled=true

   A Pod opts out with the label mirrorhook.io/skip=true.

3. Check what admission does, without creating anything:

     ${CHECK}

   A mirror reference (e.g. m.daocloud.io/docker.io/library/nginx:1.27) means the webhook answered.
   For a manifest: kubectl apply --dry-run=server -f <file> -o yaml

Pre-pulling writes ImageCaches in namespace kube-fledged for kube-fledged
(disable with --set config.kubeFledged.enabled=false).
`

const cp = await withControlPlane(t)

/** A CRD that only makes the kind exist: no schema, so a dry run checks group, version, kind and scope. */
function standInCrd(group: string, kind: string, plural: string, version: string) {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${group}` },
    spec: {
      group,
      scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List` },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
        },
      ],
    },
  }
}

async function must(r: Promise<{ code: number; stdout: string; stderr: string }>, what: string): Promise<string> {
  const result = await r
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}): ${result.stderr}${result.stdout}`)
  return result.stdout
}

async function helmTemplate(cp: ControlPlane, args: string[]): Promise<string> {
  return must(cp.helm(['template', 'mirrorhook', CHART, '--namespace', NS, ...args]), `helm template ${args.join(' ')}`)
}

// `pods[eviction]` asks about a subresource.
async function canI(cp: ControlPlane, verb: string, resource: string, namespace?: string): Promise<boolean> {
  const sub = /^(\w+)\[(\w+)\]$/.exec(resource)
  const what = sub ? [sub[1]!, `--subresource=${sub[2]}`] : [resource]
  const r = await cp.kubectl(['auth', 'can-i', verb, ...what, `--as=${SA}`, ...(namespace ? ['-n', namespace] : [])])
  const answer = r.stdout.trim()
  if (answer !== 'yes' && answer !== 'no') throw new Error(`kubectl auth can-i ${verb} ${resource}: ${r.stderr}`)
  return answer === 'yes'
}

async function eventually<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

let notes = ''

if (cp) {
  await createNamespace(cp, NS, false)
  await createNamespace(cp, 'kube-fledged', false)
  await createNamespace(cp, 'shop', true)
  await must(cp.kubectl(['apply', '-f', IMAGECACHE_CRD]), 'ImageCache CRD')
  for (const crd of [
    standInCrd('cert-manager.io', 'Issuer', 'issuers', 'v1'),
    standInCrd('cert-manager.io', 'Certificate', 'certificates', 'v1'),
    standInCrd('monitoring.coreos.com', 'ServiceMonitor', 'servicemonitors', 'v1'),
  ]) {
    await applyObject(cp, crd)
  }
  await must(cp.kubectl(['wait', '--for=condition=Established', '--timeout=30s', 'crd', '--all']), 'CRDs established')

  t.test('each TLS mode: the rendered manifests pass a server-side dry run', async (t) => {
    const caBundle = cp.caPem // any CA certificate will do for a dry run
    // Every TLS mode renders these; each mode adds its own.
    const common = (tls: string[]) => [
      'poddisruptionbudget.policy/mirrorhook',
      'serviceaccount/mirrorhook',
      'configmap/mirrorhook-config',
      'clusterrole.rbac.authorization.k8s.io/mirrorhook',
      'clusterrolebinding.rbac.authorization.k8s.io/mirrorhook',
      ...tls.map((name) => `role.rbac.authorization.k8s.io/${name}`),
      'role.rbac.authorization.k8s.io/mirrorhook-state',
      'role.rbac.authorization.k8s.io/mirrorhook-imagecaches',
      'role.rbac.authorization.k8s.io/mirrorhook-remediation',
      ...tls.map((name) => `rolebinding.rbac.authorization.k8s.io/${name}`),
      'rolebinding.rbac.authorization.k8s.io/mirrorhook-state',
      'rolebinding.rbac.authorization.k8s.io/mirrorhook-imagecaches',
      'rolebinding.rbac.authorization.k8s.io/mirrorhook-remediation',
      'service/mirrorhook',
      'deployment.apps/mirrorhook',
      'mutatingwebhookconfiguration.admissionregistration.k8s.io/mirrorhook',
    ]
    for (const [mode, args, expected] of [
      ['self-managed (default)', [], common(['mirrorhook-tls'])],
      [
        'cert-manager, with ServiceMonitor',
        ['--set', 'tls.mode=cert-manager', '--set', 'serviceMonitor.enabled=true'],
        [
          ...common([]),
          'certificate.cert-manager.io/mirrorhook-ca',
          'certificate.cert-manager.io/mirrorhook',
          'issuer.cert-manager.io/mirrorhook-selfsigned',
          'issuer.cert-manager.io/mirrorhook-ca',
          'servicemonitor.monitoring.coreos.com/mirrorhook',
        ],
      ],
      ['secret', ['--set', 'tls.mode=secret', '--set', 'tls.secretName=corp-tls', '--set-string', `tls.caBundle=${caBundle}`], common([])],
    ] as const) {
      const manifests = await helmTemplate(cp, [...args])
      const objects = parseAllDocuments(manifests).filter((d) => d.contents !== null).length
      t.equal(objects, expected.length, `${mode}: ${expected.length} objects rendered`)
      const r = await cp.kubectl(['apply', '--dry-run=server', '-f', '-'], { input: manifests })
      t.equal(r.code, 0, `${mode}: kubectl apply --dry-run=server`, { stderr: r.stderr })
      t.equal(r.stdout, expected.map((o) => `${o} created (server dry run)\n`).join(''), `${mode}: every object accepted`)
    }
    const none = await cp.kubectl(['get', 'deployments,mutatingwebhookconfigurations', '-A', '-o', 'name'])
    t.equal(none.stdout.trim(), '', 'a dry run creates nothing')
  })

  t.test('plain manifests: helm template | kubectl apply, for real, then kubectl delete', async (t) => {
    await createNamespace(cp, 'plain-system', false)
    const manifests = await must(cp.helm(['template', 'plain', CHART, '--namespace', 'plain-system']), 'helm template')
    const applied = await must(cp.kubectl(['apply', '-f', '-'], { input: manifests }), 'kubectl apply')
    const plain = [
      ['poddisruptionbudget.policy', 'plain-mirrorhook', 'plain-system'],
      ['serviceaccount', 'plain-mirrorhook', 'plain-system'],
      ['configmap', 'plain-mirrorhook-config', 'plain-system'],
      ['clusterrole.rbac.authorization.k8s.io', 'plain-mirrorhook'],
      ['clusterrolebinding.rbac.authorization.k8s.io', 'plain-mirrorhook'],
      ['role.rbac.authorization.k8s.io', 'plain-mirrorhook-tls', 'plain-system'],
      ['role.rbac.authorization.k8s.io', 'plain-mirrorhook-state', 'plain-system'],
      ['role.rbac.authorization.k8s.io', 'plain-mirrorhook-imagecaches', 'kube-fledged'],
      ['role.rbac.authorization.k8s.io', 'plain-mirrorhook-remediation', 'plain-system'],
      ['rolebinding.rbac.authorization.k8s.io', 'plain-mirrorhook-tls', 'plain-system'],
      ['rolebinding.rbac.authorization.k8s.io', 'plain-mirrorhook-state', 'plain-system'],
      ['rolebinding.rbac.authorization.k8s.io', 'plain-mirrorhook-imagecaches', 'kube-fledged'],
      ['rolebinding.rbac.authorization.k8s.io', 'plain-mirrorhook-remediation', 'plain-system'],
      ['service', 'plain-mirrorhook', 'plain-system'],
      ['deployment.apps', 'plain-mirrorhook', 'plain-system'],
      ['mutatingwebhookconfiguration.admissionregistration.k8s.io', 'plain-mirrorhook'],
    ] as const
    t.equal(applied, plain.map(([kind, name]) => `${kind}/${name} created\n`).join(''))
    const deployment = JSON.parse(
      await must(cp.kubectl(['get', 'deployment', 'plain-mirrorhook', '-n', 'plain-system', '-o', 'json']), 'get'),
    )
    t.equal(deployment.spec.replicas, 2)
    const deleted = await must(cp.kubectl(['delete', '-f', '-', '--wait=false'], { input: manifests }), 'kubectl delete')
    t.equal(
      deleted,
      plain.map(([kind, name, ns]: readonly string[]) => `${kind} "${name}" deleted${ns ? ` from ${ns} namespace` : ''}\n`).join(''),
    )
  })

  t.test('helm install (default values) for real: objects created, NOTES say how to opt in and check', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-e2e-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    await writeFile(join(dir, 'values.yaml'), stringify({ config: CONFIG }))
    const out = await must(
      cp.helm(['install', 'mirrorhook', CHART, '--namespace', NS, '-f', join(dir, 'values.yaml')], { timeoutMs: 120_000 }),
      'helm install',
    )
    notes = out
    // The whole output but the time: the release, then NOTES saying how to opt in and check with a server-side dry run.
    t.equal(
      out.replace(/^LAST DEPLOYED: .*$/m, 'LAST DEPLOYED: <time>'),
      'NAME: mirrorhook\nLAST DEPLOYED: <time>\nNAMESPACE: mirrorhook\nSTATUS: deployed\nREVISION: 1\nDESCRIPTION: Install complete\n' +
        NOTES,
    )
    const names = await must(
      cp.kubectl(['get', 'deployment,service,serviceaccount,configmap,poddisruptionbudget,role,rolebinding', '-n', NS, '-o', 'name']),
      'get',
    )
    t.equal(
      names,
      [
        'deployment.apps/mirrorhook',
        'service/mirrorhook',
        'serviceaccount/mirrorhook',
        'configmap/mirrorhook-config',
        'poddisruptionbudget.policy/mirrorhook',
        'role.rbac.authorization.k8s.io/mirrorhook-remediation',
        'role.rbac.authorization.k8s.io/mirrorhook-state',
        'role.rbac.authorization.k8s.io/mirrorhook-tls',
        'rolebinding.rbac.authorization.k8s.io/mirrorhook-remediation',
        'rolebinding.rbac.authorization.k8s.io/mirrorhook-state',
        'rolebinding.rbac.authorization.k8s.io/mirrorhook-tls',
        '',
      ].join('\n'),
    )
    t.equal(
      (await cp.kubectl(['get', 'role', 'mirrorhook-imagecaches', '-n', 'kube-fledged', '-o', 'name'])).code,
      0,
      'ImageCache Role in kube-fledged',
    )
    t.equal((await cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'name'])).code, 0)
  })

  t.test('the ServiceAccount can do what the code does, and nothing more', async (t) => {
    const allowed: [string, string, string?][] = [
      ['get', 'mutatingwebhookconfigurations/mirrorhook'],
      ['patch', 'mutatingwebhookconfigurations/mirrorhook'],
      ['create', 'secrets', NS],
      ['get', 'secrets/mirrorhook-tls', NS],
      ['update', 'secrets/mirrorhook-tls', NS],
      ['create', 'configmaps', NS],
      ['get', 'configmaps/mirrorhook-reachability', NS],
      ['update', 'configmaps/mirrorhook-reachability', NS],
      ['list', 'pods', 'shop'],
      ['watch', 'pods', 'shop'],
      ['list', 'pods', '--all-namespaces'],
      ['list', 'events', 'shop'],
      ['watch', 'events', 'shop'],
      ['list', 'namespaces'],
      ['watch', 'namespaces'],
      ['list', 'nodes'],
      ['watch', 'nodes'],
      ['create', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['patch', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['delete', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['list', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['watch', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['create', 'pods[eviction]', 'shop'],
      ['create', 'events', 'shop'],
      ['create', 'leases.coordination.k8s.io', NS],
      ['get', 'leases.coordination.k8s.io/mirrorhook-remediation', NS],
      ['update', 'leases.coordination.k8s.io/mirrorhook-remediation', NS],
    ]
    const forbidden: [string, string, string?][] = [
      ['patch', 'mutatingwebhookconfigurations/someone-else'],
      ['update', 'mutatingwebhookconfigurations/mirrorhook'],
      ['delete', 'mutatingwebhookconfigurations/mirrorhook'],
      ['create', 'mutatingwebhookconfigurations'],
      ['list', 'mutatingwebhookconfigurations'],
      ['get', 'secrets/other', NS],
      ['list', 'secrets', NS],
      ['watch', 'secrets', NS],
      ['delete', 'secrets/mirrorhook-tls', NS],
      ['get', 'secrets/mirrorhook-tls', 'kube-system'],
      ['create', 'secrets', 'shop'],
      ['get', 'configmaps/other', NS],
      ['update', 'configmaps/mirrorhook-config', NS],
      ['list', 'configmaps', NS],
      ['get', 'pods', 'shop'],
      ['create', 'pods', 'shop'],
      ['patch', 'pods', 'shop'],
      ['delete', 'pods', 'shop'],
      ['update', 'events', 'shop'],
      ['create', 'pods[binding]', 'shop'],
      ['get', 'leases.coordination.k8s.io/other', NS],
      ['update', 'leases.coordination.k8s.io/other', NS],
      ['delete', 'leases.coordination.k8s.io/mirrorhook-remediation', NS],
      ['create', 'leases.coordination.k8s.io', 'shop'],
      ['update', 'namespaces/shop'],
      ['get', 'nodes/node-1'],
      ['patch', 'nodes/node-1'],
      ['update', 'nodes/node-1/status'],
      ['create', 'imagecaches.kubefledged.io', 'shop'],
      ['update', 'imagecaches.kubefledged.io', 'kube-fledged'],
      ['get', 'deployments', NS],
      ['create', 'clusterrolebindings'],
      ['create', 'serviceaccounts/token', NS],
    ]
    for (const [verb, resource, namespace] of allowed) {
      const may = namespace === '--all-namespaces' ? await canIAll(cp, verb, resource) : await canI(cp, verb, resource, namespace)
      t.equal(may, true, `may ${verb} ${resource}${namespace ? ` in ${namespace}` : ''}`)
    }
    for (const [verb, resource, namespace] of forbidden) {
      t.equal(await canI(cp, verb, resource, namespace), false, `may not ${verb} ${resource}${namespace ? ` in ${namespace}` : ''}`)
    }
  })

  t.test('the webhook runs with the ServiceAccount token: TLS, admission, state and ImageCaches, nothing forbidden', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-sa-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    // A token from the TokenRequest API, as the kubelet would mount it.
    const token = (await must(cp.kubectl(['create', 'token', 'mirrorhook', '-n', NS, '--duration=1h']), 'kubectl create token')).trim()
    const kubeconfig = join(dir, 'kubeconfig')
    await writeFile(
      kubeconfig,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'e2e', cluster: { server: cp.server, 'certificate-authority-data': Buffer.from(cp.caPem).toString('base64') } }],
        users: [{ name: 'mirrorhook', user: { token } }],
        contexts: [{ name: 'sa', context: { cluster: 'e2e', user: 'mirrorhook', namespace: NS } }],
        'current-context': 'sa',
      }),
    )
    const whoami = await must(
      cp.kubectl(['--kubeconfig', kubeconfig, 'auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}']),
      'whoami',
    )
    t.equal(whoami, SA)

    // The API server cannot reach a Service here (no nodes): point the chart's configuration at loopback.
    const port = await freePort()
    await must(
      cp.kubectl([
        'patch',
        'mutatingwebhookconfiguration',
        'mirrorhook',
        '--type=json',
        '-p',
        JSON.stringify([{ op: 'replace', path: '/webhooks/0/clientConfig', value: { url: `https://127.0.0.1:${port}/mutate` } }]),
      ]),
      'point the webhook at loopback',
    )
    // The same arguments as the chart's container, read from the rendered Deployment.
    const deployment = JSON.parse(await must(cp.kubectl(['get', 'deployment', 'mirrorhook', '-n', NS, '-o', 'json']), 'get deployment'))
    const chartArgs: string[] = deployment.spec.template.spec.containers[0].args
    const configText = JSON.parse(
      await must(cp.kubectl(['get', 'configmap', 'mirrorhook-config', '-n', NS, '-o', 'json']), 'get configmap'),
    ).data['config.yaml']
    await writeFile(join(dir, 'config.yaml'), configText)
    const args = chartArgs
      .map((a) =>
        a
          .replace(/^--config=.*/, `--config=${join(dir, 'config.yaml')}`)
          .replace(/^--tls-cert-dir=.*/, `--tls-cert-dir=${join(dir, 'tls')}`),
      )
      .map((a) => a.replace(/^--port=.*/, `--port=${port}`).replace(/^--metrics-port=.*/, '--metrics-port=0'))
    t.same(
      args,
      [
        'serve',
        `--config=${join(dir, 'config.yaml')}`,
        `--port=${port}`,
        '--metrics-port=0',
        '--log-level=info',
        '--tls-mode=self-managed',
        '--tls-secret=mirrorhook-tls',
        `--tls-cert-dir=${join(dir, 'tls')}`,
        '--webhook-config-name=mirrorhook',
        '--service-name=mirrorhook',
      ],
      "the chart's arguments, with the chart configuration, on loopback ports",
    )

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'server', 'cli.ts'), ...args, '--host=127.0.0.1', '--tls-extra-sans=127.0.0.1'],
      {
        cwd: REPO_ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: dir,
          KUBECONFIG: kubeconfig,
          POD_NAMESPACE: NS,
          LOG_LEVEL: 'debug',
          // Carries the loopback-only guard (test/support/offline-guard.mjs).
          NODE_OPTIONS: process.env.NODE_OPTIONS ?? '',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let log = ''
    child.stdout.on('data', (d) => (log += d))
    child.stderr.on('data', (d) => (log += d))
    t.teardown(() => stopChild(child))
    await eventually(
      'the webhook listens',
      async () =>
        log.includes('mirrorhook listening on https://') || (child.exitCode !== null && Promise.reject(new Error(`exited: ${log}`))),
      // A child process under tsx on a loaded machine, creating its TLS Secret first.
      90_000,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${log.slice(-4000)}`)
    })

    const secret = JSON.parse(await must(cp.kubectl(['get', 'secret', 'mirrorhook-tls', '-n', NS, '-o', 'json']), 'TLS Secret'))
    t.equal(secret.metadata.labels['app.kubernetes.io/managed-by'], 'mirrorhook', 'created the TLS Secret')
    const caBundle = await must(
      cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'jsonpath={.webhooks[0].clientConfig.caBundle}']),
      'caBundle',
    )
    t.equal(caBundle, secret.data['ca.crt'], 'wrote its caBundle')

    const pod = (name: string) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'shop' },
      spec: { containers: [{ name: 'web', image: 'nginx:1.27' }] },
    })
    const image = await eventually('the API server calls the webhook', async () => {
      const r = await cp.kubectl(['create', '--dry-run=server', '-o', 'jsonpath={.spec.containers[0].image}', '-f', '-'], {
        input: JSON.stringify(pod('dry')),
      })
      return r.code === 0 && r.stdout !== 'nginx:1.27' && r.stdout
    })
    t.equal(image, 'm.daocloud.io/docker.io/library/nginx:1.27')

    // The check the NOTES print, typed as an operator would.
    const check = notes
      .split('\n')
      .find((l) => l.includes('run mirrorhook-check'))
      ?.trim()
    t.equal(check, CHECK, 'NOTES carry the dry-run check')
    const shell = await new Promise<{ stdout: string; stderr: string }>((resolve) => {
      const sh = spawn('/bin/sh', [
        '-c',
        check!.replace('<namespace>', 'shop').replace(/^kubectl /, `"${join(cp.binDir, 'kubectl')}" --kubeconfig "${cp.kubeconfigPath}" `),
      ])
      let stdout = ''
      let stderr = ''
      sh.stdout.on('data', (d) => (stdout += d))
      sh.stderr.on('data', (d) => (stderr += d))
      sh.on('close', () => resolve({ stdout, stderr }))
    })
    t.equal(shell.stdout, 'm.daocloud.io/docker.io/library/nginx:1.27\n', 'prints the mirror reference')
    t.equal(
      shell.stderr,
      'Warning: mirrorhook: mirrorhook-check: nginx:1.27 -> m.daocloud.io/docker.io/library/nginx:1.27 (mode always)\n',
      'and kubectl shows the webhook warning',
    )

    await must(cp.kubectl(['create', '-f', '-'], { input: JSON.stringify(pod('web')) }), 'create Pod')
    const caches = await eventually(
      'an ImageCache written under the ServiceAccount',
      async () => {
        const list = JSON.parse(
          await must(cp.kubectl(['get', 'imagecaches.kubefledged.io', '-n', 'kube-fledged', '-o', 'json']), 'list ImageCaches'),
        )
        return list.items.length > 0 && list.items
      },
      60_000,
    )
    t.same(
      caches.map((c: any) => c.spec),
      [{ cacheSpec: [{ images: ['m.daocloud.io/docker.io/library/nginx:1.27'] }] }],
      'one batch, for the admitted mirror image',
    )
    // A batch name: mirrorhook-<time in base 36>-<5 random characters>.
    t.match(caches[0].metadata.name, /^mirrorhook-[0-9a-z]+-[0-9a-z]{5}$/)

    // A failed pull as the kubelet reports it: learned from the Pod watch, shared through the state ConfigMap.
    const failing = { ...pod('failing'), metadata: { name: 'failing', namespace: 'shop', labels: { 'mirrorhook.io/skip': 'true' } } }
    failing.spec.containers[0]!.image = 'quay.io/acme/app:1'
    await must(cp.kubectl(['create', '-f', '-'], { input: JSON.stringify(failing) }), 'create failing Pod')
    const waiting = {
      reason: 'ErrImagePull',
      message:
        'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": failed to do request: Head "https://quay.io/v2/acme/app/manifests/1": dial tcp 54.1.2.3:443: i/o timeout',
    }
    const status = {
      status: {
        containerStatuses: [{ name: 'web', image: 'quay.io/acme/app:1', imageID: '', ready: false, restartCount: 0, state: { waiting } }],
      },
    }
    await must(
      cp.kubectl(['patch', 'pod', 'failing', '-n', 'shop', '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]),
      'report the failed pull',
    )
    const state = await eventually(
      'the state ConfigMap written under the ServiceAccount',
      async () => {
        const r = await cp.kubectl(['get', 'configmap', 'mirrorhook-reachability', '-n', NS, '-o', 'json'])
        return r.code === 0 && JSON.stringify(JSON.parse(r.stdout).data)
      },
      60_000,
    )
    const learned = JSON.parse(JSON.parse(state)['state.json'])
    t.same(
      learned.registries.map((r: any) => [r.registry, r.state, r.decidedBy.source, r.decidedBy.outcome, r.decidedBy.detail]),
      [['quay.io', 'unreachable', 'pod', 'fail', 'i/o timeout pulling quay.io/acme/app:1 (pod shop/failing)']],
      'the learned state names the registry and the evidence',
    )

    const refusals = log.split('\n').filter((l) => /forbidden|\b403\b/i.test(l))
    t.same(refusals, [], 'no request was refused by RBAC')
  })

  t.test('helm upgrade keeps the caBundle the webhook wrote, and a configuration change rolls the Pods', async (t) => {
    const before = JSON.parse(await must(cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'json']), 'get'))
    const caBundle = before.webhooks[0].clientConfig.caBundle
    const tlsSecret = JSON.parse(await must(cp.kubectl(['get', 'secret', 'mirrorhook-tls', '-n', NS, '-o', 'json']), 'TLS Secret'))
    t.equal(caBundle, tlsSecret.data['ca.crt'], "the webhook wrote one: its Secret's CA")
    // Back to the chart's Service form (the previous test pointed it at loopback), keeping the caBundle.
    await must(
      cp.kubectl([
        'patch',
        'mutatingwebhookconfiguration',
        'mirrorhook',
        '--type=json',
        '-p',
        JSON.stringify([
          {
            op: 'replace',
            path: '/webhooks/0/clientConfig',
            value: { service: { name: 'mirrorhook', namespace: NS, path: '/mutate', port: 443 }, caBundle },
          },
        ]),
      ]),
      'restore the Service form',
    )
    const checksum = async () =>
      JSON.parse(await must(cp.kubectl(['get', 'deployment', 'mirrorhook', '-n', NS, '-o', 'json']), 'get')).spec.template.metadata
        .annotations['checksum/config']
    const oldChecksum = await checksum()
    const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-upgrade-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    await writeFile(join(dir, 'values.yaml'), stringify({ config: { ...CONFIG, noProxy: ['.corp.example'] } }))
    const out = await must(
      cp.helm(['upgrade', 'mirrorhook', CHART, '--namespace', NS, '-f', join(dir, 'values.yaml')], { timeoutMs: 120_000 }),
      'helm upgrade',
    )
    t.equal(
      out.replace(/^LAST DEPLOYED: .*$/m, 'LAST DEPLOYED: <time>'),
      'Release "mirrorhook" has been upgraded. Happy Helming!\n' +
        'NAME: mirrorhook\nLAST DEPLOYED: <time>\nNAMESPACE: mirrorhook\nSTATUS: deployed\nREVISION: 2\nDESCRIPTION: Upgrade complete\n' +
        NOTES,
    )
    const newChecksum = await checksum()
    // sha256 of the configuration, hex.
    t.match(newChecksum, /^[0-9a-f]{64}$/)
    t.match(oldChecksum, /^[0-9a-f]{64}$/)
    t.not(newChecksum, oldChecksum, 'new checksum/config: the Deployment rolls')
    const after = JSON.parse(await must(cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'json']), 'get'))
    t.equal(after.webhooks[0].clientConfig.caBundle, caBundle, 'caBundle kept across the upgrade')
    t.same(after.webhooks[0].clientConfig.service, { name: 'mirrorhook', namespace: NS, path: '/mutate', port: 443 })

    const uninstall = await must(cp.helm(['uninstall', 'mirrorhook', '--namespace', NS], { timeoutMs: 120_000 }), 'helm uninstall')
    t.equal(uninstall, 'release "mirrorhook" uninstalled\n')
    t.equal((await cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook'])).code, 1, 'webhook configuration removed')
    t.equal(
      (await cp.kubectl(['get', 'secret', 'mirrorhook-tls', '-n', NS, '-o', 'name'])).stdout.trim(),
      'secret/mirrorhook-tls',
      'the TLS Secret is not part of the release (NOTES say so)',
    )
  })
}

async function canIAll(cp: ControlPlane, verb: string, resource: string): Promise<boolean> {
  const r = await cp.kubectl(['auth', 'can-i', verb, resource, `--as=${SA}`, '--all-namespaces'])
  return r.stdout.trim() === 'yes'
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}
