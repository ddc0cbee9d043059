// SIGTERM against a real API server: `mirrorhook serve` with keep-alive clients and a review in
// flight drains, then runs its final steps; the last state sync writes the ConfigMap that was
// removed after the regular sync, so only the final one can have written it again.
import t from 'tap'
import { CoreV1Api } from '@kubernetes/client-node'
import { Agent } from 'node:https'
import { podReview, until } from '../support/helpers.js'
import { postInFlight, postReview, startServe } from '../support/serve.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { createNamespace } from '../support/webhook.js'

const NS = 'mirrorhook'
const TIMEOUT =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": failed to do request: Head "https://quay.io/v2/acme/app/manifests/1": dial tcp 54.1.2.3:443: i/o timeout'

const cp = await withControlPlane(t)

if (cp) {
  const core = (await cp.kubeConfig()).makeApiClient(CoreV1Api)
  await createNamespace(cp, NS, false)
  await createNamespace(cp, 'shop', true)

  t.test('SIGTERM: connections drained, the final state sync writes the ConfigMap, the process exits', async (t) => {
    const serve = await startServe(t, {
      config: {
        mode: 'auto',
        registries: ['quay.io'],
        kubeFledged: { enabled: false },
        // No probes: nothing may leave the machine. Regular syncs only after an hour.
        reachability: { probes: { enabled: false }, persistence: { syncSeconds: 3600 } },
        server: { drainTimeoutSeconds: 5 },
      },
      env: { KUBECONFIG: cp.kubeconfigPath, POD_NAMESPACE: NS },
      listenMs: 90_000,
    })
    const { port, lines } = serve
    const ops = `http://127.0.0.1:${serve.metricsPort}`

    // A failed pull in the cluster, as the kubelet reports it: learned, then synced soon after.
    const created = await cp.kubectl(['create', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'first', namespace: 'shop' },
        spec: { containers: [{ name: 'app', image: 'quay.io/acme/app:1' }] },
      }),
    })
    t.equal(created.code, 0, created.stderr)
    const pod = await core.readNamespacedPod({ name: 'first', namespace: 'shop' })
    pod.status = {
      ...pod.status,
      phase: 'Pending',
      containerStatuses: [
        {
          name: 'app',
          image: 'quay.io/acme/app:1',
          imageID: '',
          ready: false,
          restartCount: 0,
          started: false,
          state: { waiting: { reason: 'ErrImagePull', message: TIMEOUT } },
        },
      ],
    }
    await core.replaceNamespacedPodStatus({ name: 'first', namespace: 'shop', body: pod })
    await until(
      'quay.io to be learned as unreachable',
      async () => {
        const state = (await (await fetch(`${ops}/state`)).json()) as { registries: { registry: string; state: string }[] }
        return state.registries.find((r) => r.registry === 'quay.io' && r.state === 'unreachable')
      },
      60_000,
    )
    const configMap = ['get', 'configmap', 'mirrorhook-reachability', '-n', NS, '-o', 'jsonpath={.data}']
    await until(
      'the regular sync to write the ConfigMap',
      async () => ((await cp.kubectl(configMap)).stdout.includes('quay.io') ? true : undefined),
      30_000,
    )
    // Removed: from now on only the final sync can write it (the next regular one is an hour away).
    t.equal((await cp.kubectl(['delete', 'configmap', 'mirrorhook-reachability', '-n', NS])).code, 0)

    // An idle keep-alive client, and a review still arriving at SIGTERM.
    const agent = new Agent({ keepAlive: true, ca: serve.ca })
    t.teardown(() => agent.destroy())
    const review = JSON.stringify(podReview('e2e-sigterm', ['quay.io/acme/app:2']))
    const answer = await postReview(port, agent, review)
    t.same([answer.status, answer.connection], [200, 'keep-alive'])
    const idle = Object.values(agent.freeSockets).flat()[0]!
    let idleClosed = false
    idle.once('close', () => (idleClosed = true))
    // The review in flight comes on a connection of its own, open (TLS done) before SIGTERM.
    const second = new Agent({ keepAlive: true, ca: serve.ca })
    t.teardown(() => second.destroy())
    const inFlight = postInFlight(port, second, review, serve.logged('shutting down'))
    await inFlight.connected

    serve.child.kill('SIGTERM')
    const answered = await inFlight.answered
    t.same(
      { status: answered.status, connection: answered.connection, uid: JSON.parse(answered.body).response.uid },
      { status: 200, connection: 'close', uid: 'e2e-sigterm' },
      'the in-flight review is answered, its connection closed',
    )
    const [code, signal] = await serve.exit()
    t.same([code, signal], [0, null], serve.stderr())
    t.ok(idleClosed, 'the idle keep-alive connection was closed by the server')
    t.same(lines.find((l) => l.msg === 'stopped')?.steps, ['remediation stop: done', 'final state sync: done'])
    t.same(
      lines.filter((l) => l.msg.startsWith('drain timeout reached')),
      [],
      'drained before the drain timeout',
    )
    const written = await cp.kubectl(configMap)
    t.equal(written.code, 0, written.stderr)
    const state = JSON.parse(JSON.parse(written.stdout)['state.json'])
    t.strictSame(
      state.registries.map((r: any) => [r.registry, r.state, r.decidedBy.source, r.decidedBy.outcome, r.decidedBy.detail]),
      [['quay.io', 'unreachable', 'pod', 'fail', 'i/o timeout pulling quay.io/acme/app:1 (pod shop/first)']],
      'the final sync wrote it',
    )
    t.strictSame(state.refusals, [])
  })
}
