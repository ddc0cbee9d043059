// Learning from the cluster on a real API server: Pod statuses and Events are
// written as the kubelet would (there is no kubelet), and later Pods follow.
import t from 'tap'
import { hostname } from 'node:os'
import { CoreV1Api } from '@kubernetes/client-node'
import { pino } from 'pino'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { ReachabilityService } from '../../server/reachability/service.js'
import type { StateSnapshot } from '../../server/reachability/snapshot.js'
import { ConfigMapStore } from '../../server/reachability/store.js'
import { runCli as runCliAs, until as untilWithin } from '../support/helpers.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const STATE_NAMESPACE = 'mirrorhook'
const CONFIG = {
  mirror: { prefix: 'm.daocloud.io' },
  registries: ['quay.io', 'ghcr.io', 'gcr.io'],
  // Lets registerWebhook see a rewrite before anything is learned.
  unreachable: ['gcr.io'],
  mode: 'auto',
  kubeFledged: { enabled: false },
  reachability: {
    unknown: 'direct',
    // No probes: this test must not reach out of the machine.
    probes: { enabled: false },
    learning: { slowPullSeconds: 60 },
    persistence: { syncSeconds: 1 },
  },
}

const TIMEOUT =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": failed to do request: Head "https://quay.io/v2/acme/app/manifests/1": dial tcp 54.1.2.3:443: i/o timeout'
const NOT_FOUND =
  'rpc error: code = NotFound desc = failed to pull and unpack image "ghcr.io/acme/typo:1": failed to resolve reference "ghcr.io/acme/typo:1": ghcr.io/acme/typo:1: not found'
const ALLOWLIST =
  'initializing source docker://m.daocloud.io/quay.io/acme/app:2: reading manifest 2 in m.daocloud.io/quay.io/acme/app: denied: 🚫 这镜像不在白名单. this image is not in the allowlist.'

const cp = await withControlPlane(t)

if (cp) {
  const kubeConfig = await cp.kubeConfig()
  const core = kubeConfig.makeApiClient(CoreV1Api)
  const kube = { kubeConfig, source: cp.kubeconfigPath }
  const logger = pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' })
  await createNamespace(cp, STATE_NAMESPACE, false)
  await createNamespace(cp, 'shop', true)
  await createNamespace(cp, 'elsewhere', false)

  const start = (devCertDir?: string, port?: number) =>
    startTestWebhook({ config: CONFIG, devCertDir, port, logger, extra: { kube, metricsPort: 0, env: { POD_NAMESPACE: STATE_NAMESPACE } } })
  let webhook = await start()
  t.teardown(() => webhook.stop())
  await registerWebhook(cp, webhook, 'shop', 'gcr.io/acme/probe:1')
  await webhook.server.reachability!.learnerSynced()

  const runCli = (args: string[]) => runCliAs(args, { env: { KUBECONFIG: cp.kubeconfigPath } })

  async function createPod(
    namespace: string,
    name: string,
    image: string,
    labels: Record<string, string> = {},
  ): Promise<{ image: string; warnings: string }> {
    const r = await cp!.kubectl(['create', '-o', 'json', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name, namespace, labels },
        spec: { containers: [{ name: 'app', image }] },
      }),
    })
    if (r.code !== 0) throw new Error(r.stderr)
    return { image: JSON.parse(r.stdout).spec.containers[0].image, warnings: r.stderr }
  }

  // What the kubelet writes when a pull fails: the container waits, with the runtime's error.
  async function failPull(namespace: string, name: string, reason: 'ErrImagePull' | 'ImagePullBackOff', message: string): Promise<void> {
    const pod = await core.readNamespacedPod({ name, namespace })
    const image = pod.spec!.containers[0]!.image!
    pod.status = {
      ...pod.status,
      phase: 'Pending',
      containerStatuses: [
        { name: 'app', image, imageID: '', ready: false, restartCount: 0, started: false, state: { waiting: { reason, message } } },
      ],
    }
    await core.replaceNamespacedPodStatus({ name, namespace, body: pod })
  }

  const until = <T>(what: string, fn: () => Promise<T | undefined>) => untilWithin(what, fn, 20_000)

  // A whole text, anchored, where <T> stands for a time in seconds (when evidence arrived: run time) and <N> for a count.
  const anchored = (text: string) =>
    new RegExp(
      `^${text
        .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
        .replace(/<T>/g, '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ')
        .replace(/<N>/g, '\\d+')}$`,
    )
  // `mirrorhook state` after the first test: the table's column widths follow the times, hence ' +'.
  const stateTable = (source: string) => {
    const T = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ'
    const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    return new RegExp(
      '^REGISTRY +STATE +SINCE +EXPIRES +EVIDENCE\\n' +
        'gcr\\.io +unreachable +- +never +listed in config unreachable\\n' +
        `quay\\.io +unreachable +${T} \\(\\d+[sm] ago\\) +${T} +${esc('pod status: i/o timeout pulling quay.io/acme/app:1 (pod shop/first)')}, since ${T}\\n` +
        '\\nMIRROR +FOR +HEALTH +REFUSALS +ALLOWLIST\\n' +
        `m\\.daocloud\\.io +prefix +unknown +0 +${esc('none (every repository; refusals are learned)')}\\n` +
        `\\nsource: ${esc(source)}, written ${T.replace('Z', '\\.\\d{3}Z')} by \\S+\\n$`,
    )
  }
  const stateOf = (registry: string) => webhook.server.reachability!.view().status(registry)

  t.test('a network pull failure in a Pod status sends later Pods of that registry to the mirror', async (t) => {
    const first = await createPod('shop', 'first', 'quay.io/acme/app:1')
    t.equal(first.image, 'quay.io/acme/app:1', 'nothing known yet: pulled directly (reachability.unknown: direct)')

    await failPull('shop', 'first', 'ErrImagePull', TIMEOUT)
    await until('quay.io unreachable', async () => (stateOf('quay.io').state === 'unreachable' ? true : undefined))

    const later = await createPod('shop', 'later', 'quay.io/acme/app:2')
    t.equal(later.image, 'm.daocloud.io/quay.io/acme/app:2')
    t.match(
      later.warnings,
      anchored(
        'Warning: mirrorhook: app: quay.io/acme/app:2 -> m.daocloud.io/quay.io/acme/app:2 (registry quay.io is unreachable ' +
          '(pod status: i/o timeout pulling quay.io/acme/app:1 (pod shop/first), since <T>))\n',
      ),
    )
  })

  t.test('mirrorhook state shows the evidence, from the ConfigMap and from the server', async (t) => {
    const fromCluster = await until('state in the ConfigMap', async () => {
      const r = await runCli(['state', '-n', STATE_NAMESPACE])
      return r.code === 0 && /quay\.io\s+unreachable/.test(r.stdout) ? r : undefined
    })
    t.match(fromCluster.stdout, stateTable(`ConfigMap ${STATE_NAMESPACE}/mirrorhook-reachability`))

    const fromServer = await runCli(['state', '--url', `http://127.0.0.1:${webhook.server.metricsPort}`])
    t.equal(fromServer.code, 0, fromServer.stderr)
    t.match(fromServer.stdout, stateTable(`http://127.0.0.1:${webhook.server.metricsPort}/state`))

    const cm = await core.readNamespacedConfigMap({ name: 'mirrorhook-reachability', namespace: STATE_NAMESPACE })
    t.same(cm.metadata?.labels, { 'app.kubernetes.io/component': 'reachability', 'app.kubernetes.io/managed-by': 'mirrorhook' })
    // The stored state with its times (all written at run time) replaced.
    t.same(JSON.parse(cm.data!['state.json']!.replace(/"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"/g, '"<T>"')), {
      version: 1,
      writtenAt: '<T>',
      writer: hostname(),
      registries: [
        {
          registry: 'quay.io',
          state: 'unreachable',
          since: '<T>',
          expiresAt: '<T>',
          decidedBy: { at: '<T>', source: 'pod', outcome: 'fail', detail: 'i/o timeout pulling quay.io/acme/app:1 (pod shop/first)' },
          confirmations: 1,
          updatedAt: '<T>',
          consecutiveFailures: 1,
          consecutiveSuccesses: 0,
          holdUntil: '<T>',
          recent: [],
        },
      ],
      refusals: [],
      static: ['gcr.io'],
    })
  })

  t.test('not found is not a network failure; Pods outside opted-in namespaces teach nothing', async (t) => {
    await createPod('shop', 'typo', 'ghcr.io/acme/typo:1')
    await failPull('shop', 'typo', 'ErrImagePull', NOT_FOUND)
    await createPod('elsewhere', 'quiet', 'ghcr.io/acme/x:1')
    await failPull(
      'elsewhere',
      'quiet',
      'ImagePullBackOff',
      `Back-off pulling image "ghcr.io/acme/x:1": ErrImagePull: ${TIMEOUT.replace(/quay/g, 'ghcr')}`,
    )
    // A Pod after both, so the learner has seen them once this one is counted (skipped: it keeps its image).
    await createPod('shop', 'marker', 'quay.io/acme/marker:1', { 'mirrorhook.io/skip': 'true' })
    await failPull('shop', 'marker', 'ErrImagePull', TIMEOUT)
    await until('marker counted', async () => (/2x/.test(stateOf('quay.io').evidence) ? true : undefined))
    t.equal(stateOf('ghcr.io').state, 'unknown')
    t.equal((await createPod('shop', 'ghcr-direct', 'ghcr.io/acme/web:1')).image, 'ghcr.io/acme/web:1')
  })

  t.test('an image the mirror refuses is no longer rewritten; other images still are', async (t) => {
    await failPull('shop', 'later', 'ErrImagePull', ALLOWLIST)
    await until('refusal learned', async () =>
      webhook.server.reachability!.view().mirrorRefusal?.('m.daocloud.io/quay.io/acme/app') ? true : undefined,
    )
    const again = await createPod('shop', 'again', 'quay.io/acme/app:3')
    t.equal(again.image, 'quay.io/acme/app:3', 'kept: the mirror would refuse it')
    t.equal((await createPod('shop', 'other', 'quay.io/acme/other:1')).image, 'm.daocloud.io/quay.io/acme/other:1')
    const r = await runCli(['rewrite', 'quay.io/acme/app:4', '-c', '/dev/null', '--url', `http://127.0.0.1:${webhook.server.metricsPort}`])
    t.match(
      r.stdout,
      anchored(
        'quay.io/acme/app:4 kept: mirror refused m.daocloud.io/quay.io/acme/app (not in the mirror allowlist (pod shop/later), since <T>)\n',
      ),
    )
  })

  t.test('a slow pull reported in a Pulled event marks the registry slow', async (t) => {
    await createPod('shop', 'big', 'ghcr.io/acme/big:1')
    const now = new Date()
    await core.createNamespacedEvent({
      namespace: 'shop',
      body: {
        metadata: { name: `big.${Date.now()}`, namespace: 'shop' },
        involvedObject: { kind: 'Pod', name: 'big', namespace: 'shop', fieldPath: 'spec.containers{app}' },
        reason: 'Pulled',
        type: 'Normal',
        message: 'Successfully pulled image "ghcr.io/acme/big:1" in 2m31.5s (2m31.5s including waiting). Image size: 912345678 bytes.',
        source: { component: 'kubelet', host: 'node-1' },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    })
    await until('ghcr.io slow', async () => (stateOf('ghcr.io').state === 'slow' ? true : undefined))
    const next = await createPod('shop', 'after-slow', 'ghcr.io/acme/web:2')
    t.equal(next.image, 'm.daocloud.io/ghcr.io/acme/web:2')
    t.match(
      next.warnings,
      anchored(
        'Warning: mirrorhook: app: ghcr.io/acme/web:2 -> m.daocloud.io/ghcr.io/acme/web:2 (registry ghcr.io is slow ' +
          '(pull event: pull of ghcr.io/acme/big:1 took 151.5 s (over 60 s) (pod shop/big), since <T>))\n',
      ),
    )
  })

  t.test('state survives a restart: a new instance starts from the ConfigMap', async (t) => {
    await until('slow state written', async () => {
      const cm = await core.readNamespacedConfigMap({ name: 'mirrorhook-reachability', namespace: STATE_NAMESPACE })
      return /"state":\s*"slow"/.test(cm.data?.['state.json'] ?? '') ? true : undefined
    })
    const { devCertDir } = webhook
    const port = webhook.server.port
    await webhook.stop()
    webhook = await start(devCertDir, port)
    t.equal(stateOf('quay.io').state, 'unreachable', 'known before any new evidence')
    const p = await createPod('shop', 'after-restart', 'quay.io/acme/web:1')
    t.equal(p.image, 'm.daocloud.io/quay.io/acme/web:1')
    // The count is the free part: the new instance may or may not have counted the Pod status again yet.
    t.match(
      webhook.server.reachability!.view().mirrorRefusal?.('m.daocloud.io/quay.io/acme/app'),
      anchored('not in the mirror allowlist (pod shop/later), <N>x, since <T>'),
      'refusals too',
    )
  })

  t.test('two replicas share the ConfigMap with optimistic concurrency', async (t) => {
    const policy = compilePolicy(resolveConfig({ ...CONFIG, reachability: { ...CONFIG.reachability, learning: { enabled: false } } }, {}))
    const replicas = ['replica-a', 'replica-b'].map(
      (identity) => new ReachabilityService({ policy, logger, kubeConfig, namespace: STATE_NAMESPACE, identity }),
    )
    await Promise.all(replicas.map((r) => r.start()))
    t.teardown(() => Promise.all(replicas.map((r) => r.stop())))
    const [a, b] = replicas as [ReachabilityService, ReachabilityService]
    const at = Date.now()
    a.observe('registry-a.example', { at, source: 'pod', outcome: 'fail', detail: 'connection refused seen by a' })
    b.observe('registry-b.example', { at, source: 'pod', outcome: 'fail', detail: 'connection refused seen by b' })
    // Both write at once: one of them meets a 409 and merges again.
    await Promise.all([a.syncNow(), b.syncNow()])
    await Promise.all([a.syncNow(), b.syncNow()])
    for (const [name, r] of [
      ['a', a],
      ['b', b],
    ] as const) {
      t.equal(r.view().status('registry-a.example').state, 'unreachable', `${name} knows what a saw`)
      t.equal(r.view().status('registry-b.example').state, 'unreachable', `${name} knows what b saw`)
    }
    const cm = await core.readNamespacedConfigMap({ name: 'mirrorhook-reachability', namespace: STATE_NAMESPACE })
    const stored = JSON.parse(cm.data!['state.json']!) as { registries: { registry: string }[] }
    t.same(
      stored.registries.map((r) => r.registry).sort(),
      ['ghcr.io', 'quay.io', 'registry-a.example', 'registry-b.example'],
      'nothing lost',
    )
  })

  t.test('a write that lost the race (409) is retried on top of the winner', async (t) => {
    const mine = new ConfigMapStore(kubeConfig, STATE_NAMESPACE, 'race')
    const theirs = new ConfigMapStore(kubeConfig, STATE_NAMESPACE, 'race')
    const snapshot = (writer: string, registries: string[]): StateSnapshot => ({
      version: 1,
      writtenAt: new Date().toISOString(),
      writer,
      registries: registries.map((registry) => ({
        registry,
        state: 'unreachable',
        since: new Date().toISOString(),
        confirmations: 1,
        updatedAt: new Date().toISOString(),
        consecutiveFailures: 1,
        consecutiveSuccesses: 0,
        recent: [],
      })),
      refusals: [],
    })
    await theirs.update(() => snapshot('theirs', ['one.example']))
    const seen: (string[] | undefined)[] = []
    const result = await mine.update(async (stored) => {
      seen.push(stored?.registries.map((r) => r.registry))
      // Another replica writes between our read and our write, once.
      if (seen.length === 1)
        await theirs.update((s) => snapshot('theirs', [...(s?.registries.map((r) => r.registry) ?? []), 'two.example']))
      return snapshot('mine', [...(stored?.registries.map((r) => r.registry) ?? []), 'three.example'])
    })
    t.same(result, { written: true, conflicts: 1 })
    t.same(seen, [['one.example'], ['one.example', 'two.example']], 'read again after the 409')
    const final = await mine.read()
    t.same(
      final.snapshot?.registries.map((r) => r.registry),
      ['one.example', 'two.example', 'three.example'],
    )
  })
}
