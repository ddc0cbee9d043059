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
    for (const [mode, args] of [
      ['self-managed (default)', []],
      ['cert-manager, with ServiceMonitor', ['--set', 'tls.mode=cert-manager', '--set', 'serviceMonitor.enabled=true']],
      ['secret', ['--set', 'tls.mode=secret', '--set', 'tls.secretName=corp-tls', '--set-string', `tls.caBundle=${caBundle}`]],
    ] as const) {
      const manifests = await helmTemplate(cp, [...args])
      const objects = parseAllDocuments(manifests).filter((d) => d.contents !== null).length
      const r = await cp.kubectl(['apply', '--dry-run=server', '-f', '-'], { input: manifests })
      t.equal(r.code, 0, `${mode}: kubectl apply --dry-run=server`, { stderr: r.stderr })
      t.equal(
        r.stdout
          .trim()
          .split('\n')
          .filter((l) => l.endsWith('(server dry run)')).length,
        objects,
        `${mode}: all ${objects} objects accepted`,
      )
    }
    const none = await cp.kubectl(['get', 'deployments,mutatingwebhookconfigurations', '-A', '-o', 'name'])
    t.equal(none.stdout.trim(), '', 'a dry run creates nothing')
  })

  t.test('plain manifests: helm template | kubectl apply, for real, then kubectl delete', async (t) => {
    await createNamespace(cp, 'plain-system', false)
    const manifests = await must(cp.helm(['template', 'plain', CHART, '--namespace', 'plain-system']), 'helm template')
    const applied = await must(cp.kubectl(['apply', '-f', '-'], { input: manifests }), 'kubectl apply')
    t.match(applied, /deployment\.apps\/plain-mirrorhook created/)
    t.match(applied, /mutatingwebhookconfiguration\.admissionregistration\.k8s\.io\/plain-mirrorhook created/)
    const deployment = JSON.parse(
      await must(cp.kubectl(['get', 'deployment', 'plain-mirrorhook', '-n', 'plain-system', '-o', 'json']), 'get'),
    )
    t.equal(deployment.spec.replicas, 2)
    const deleted = await must(cp.kubectl(['delete', '-f', '-', '--wait=false'], { input: manifests }), 'kubectl delete')
    t.match(deleted, /mutatingwebhookconfiguration\.admissionregistration\.k8s\.io "plain-mirrorhook" deleted/)
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
    t.match(out, /STATUS: deployed/)
    t.match(out, /kubectl label namespace <namespace> mirrorhook\.io\/enabled=true/, 'NOTES: opting a namespace in')
    t.match(out, /--dry-run=server/, 'NOTES: checking with a server-side dry run')
    const names = await must(
      cp.kubectl(['get', 'deployment,service,serviceaccount,configmap,poddisruptionbudget,role,rolebinding', '-n', NS, '-o', 'name']),
      'get',
    )
    for (const expected of [
      'deployment.apps/mirrorhook',
      'service/mirrorhook',
      'serviceaccount/mirrorhook',
      'configmap/mirrorhook-config',
      'poddisruptionbudget.policy/mirrorhook',
      'role.rbac.authorization.k8s.io/mirrorhook-tls',
      'role.rbac.authorization.k8s.io/mirrorhook-state',
    ]) {
      t.ok(names.split('\n').includes(expected), expected)
    }
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
      const args = namespace === '--all-namespaces' ? await canIAll(cp, verb, resource) : await canI(cp, verb, resource, namespace)
      t.ok(args, `may ${verb} ${resource}${namespace ? ` in ${namespace}` : ''}`)
    }
    for (const [verb, resource, namespace] of forbidden) {
      t.notOk(await canI(cp, verb, resource, namespace), `may not ${verb} ${resource}${namespace ? ` in ${namespace}` : ''}`)
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
    t.ok(args.includes(`--config=${join(dir, 'config.yaml')}`), 'runs with the chart configuration')

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
    t.ok(check, 'NOTES carry the dry-run check')
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
    t.match(shell.stderr, /^Warning: mirrorhook: .*nginx:1\.27/m, 'and kubectl shows the webhook warning')

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
    t.match(JSON.stringify(caches[0].spec), /m\.daocloud\.io\/docker\.io\/library\/nginx:1\.27/, 'for the admitted mirror image')

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
    t.match(state, /quay\.io/, 'the learned state names the registry')

    const refusals = log.split('\n').filter((l) => /forbidden|\b403\b/i.test(l))
    t.same(refusals, [], 'no request was refused by RBAC')
  })

  t.test('helm upgrade keeps the caBundle the webhook wrote, and a configuration change rolls the Pods', async (t) => {
    const before = JSON.parse(await must(cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'json']), 'get'))
    const caBundle = before.webhooks[0].clientConfig.caBundle
    t.ok(caBundle, 'the webhook wrote one')
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
    t.match(out, /STATUS: deployed/)
    t.not(await checksum(), oldChecksum, 'new checksum/config: the Deployment rolls')
    const after = JSON.parse(await must(cp.kubectl(['get', 'mutatingwebhookconfiguration', 'mirrorhook', '-o', 'json']), 'get'))
    t.equal(after.webhooks[0].clientConfig.caBundle, caBundle, 'caBundle kept across the upgrade')
    t.same(after.webhooks[0].clientConfig.service, { name: 'mirrorhook', namespace: NS, path: '/mutate', port: 443 })

    const uninstall = await must(cp.helm(['uninstall', 'mirrorhook', '--namespace', NS], { timeoutMs: 120_000 }), 'helm uninstall')
    t.match(uninstall, /uninstalled/)
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
