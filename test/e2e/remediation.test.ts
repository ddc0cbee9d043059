// Pods already failing to pull, fixed: on the simulated cluster (kwok nodes that cannot reach
// Docker Hub, kube-controller-manager, kube-scheduler, a real OCI registry as the mirror), a
// Deployment created while mirrorhook was not registered waits in ErrImagePull; mirrorhook,
// registered then, evicts its Pods and the ReplicaSet recreates them through admission.
import t from 'tap'
import { pino } from 'pino'
import { pushImage } from '../support/registry.js'
import { withCluster } from '../support/tap-cluster.js'
import { createNamespace, registerWebhook, startTestWebhook, type TestWebhook } from '../support/webhook.js'
import { waitFor as pollFor } from '../support/helpers.js'

const cluster = await withCluster(t, {
  nodes: 2,
  unreachable: { registries: ['docker.io'] },
  kubeFledged: false,
})

// Cluster steps (scheduling, kwok Stages, controllers) get 90 s.
const waitFor = <T>(what: string, check: () => Promise<T | undefined | false>, ms = 90_000) => pollFor(what, check, ms)

if (cluster) {
  const { cp } = cluster
  const registry = cluster.registry!
  const MIRROR = registry.host
  const nginxMirror = `${MIRROR}/docker.io/library/nginx:1.25`
  await pushImage(registry, 'docker.io/library/nginx', '1.25')

  const deployment = (namespace: string, name: string, replicas: number, image = 'nginx:1.25') => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: 'web', image }] } },
    },
  })
  const create = async (obj: unknown) => {
    const r = await cp.kubectl(['create', '-f', '-'], { input: JSON.stringify(obj) })
    if (r.code !== 0) throw new Error(r.stderr)
  }
  const pods = async (namespace: string, app: string): Promise<any[]> =>
    (await cp.request('GET', `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(`app=${app}`)}`)).json().items
  const events = async (namespace: string, reason: string): Promise<any[]> =>
    (await cp.request('GET', `/api/v1/namespaces/${namespace}/events?fieldSelector=${encodeURIComponent(`reason=${reason}`)}`)).json().items
  const waiting = (p: any) => p.status?.containerStatuses?.[0]?.state?.waiting
  const running = (p: any) => p.status?.phase === 'Running' && p.status.containerStatuses?.[0]?.state?.running !== undefined
  const failingPods = (namespace: string, app: string, n: number) =>
    waitFor(`${n} Pods of ${app} waiting in ErrImagePull or ImagePullBackOff`, async () => {
      const ps = await pods(namespace, app)
      return ps.length === n && ps.every((p) => /^(ErrImagePull|ImagePullBackOff)$/.test(waiting(p)?.reason ?? '')) ? ps : undefined
    })

  await createNamespace(cp, 'mirrorhook', false)
  await createNamespace(cp, 'shop', true)
  await createNamespace(cp, 'kube-system', true)

  const kc = await cp.kubeConfig()
  const webhookConfig = (remediation: Record<string, unknown>) => ({
    mirror: { prefix: MIRROR },
    registries: ['docker.io'],
    mode: 'auto',
    // What the kwok nodes show, stated: the decision does not depend on how fast it is learned.
    unreachable: ['docker.io'],
    imageCheckIntervalSeconds: 1,
    reachability: { unknown: 'mirror', probes: { enabled: false }, persistence: { enabled: false } },
    kubeFledged: { enabled: false },
    remediation: { minFailingSeconds: 1, leaseDurationSeconds: 2, ...remediation },
  })
  const start = (remediation: Record<string, unknown>, env: Record<string, string> = {}): Promise<TestWebhook> =>
    startTestWebhook({
      config: webhookConfig(remediation),
      logger: pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' }),
      extra: { kube: { kubeConfig: kc, source: cp.kubeconfigPath }, metricsPort: 0, env: { POD_NAMESPACE: 'mirrorhook', ...env } },
    })

  t.test('a Deployment created while mirrorhook was away: its failing Pods evicted once each, recreated on the mirror', async (t) => {
    // Created before any webhook is registered: admitted unchanged, then failing on the nodes.
    await create(deployment('shop', 'web', 2))
    // kube-system is never touched, whatever its labels say.
    await create(deployment('kube-system', 'sys', 1))
    const failing = await failingPods('shop', 'web', 2)
    const failingUids = failing.map((p) => p.metadata.uid).sort()
    const sysUid = (await failingPods('kube-system', 'sys', 1))[0].metadata.uid

    // Admission is registered before any instance that remediates starts: a Pod evicted
    // earlier would come back unchanged, fail again and be evicted again.
    const front = await start({ enabled: false })
    t.teardown(() => front.stop())
    await registerWebhook(cp, front, 'shop', 'busybox:1.36')
    // Two replicas of mirrorhook: one Lease, one actor.
    const a = await start({})
    t.teardown(() => a.stop())
    const b = await start({})
    t.teardown(() => b.stop())

    const up = await waitFor('2 Pods running with the mirror reference', async () => {
      const ps = (await pods('shop', 'web')).filter((p) => !p.metadata.deletionTimestamp)
      return ps.length === 2 && ps.every(running) ? ps : undefined
    })
    for (const p of up) {
      t.equal(p.spec.containers[0].image, nginxMirror)
      t.equal(p.metadata.annotations['mirrorhook.io/original-images'], '{"web":"nginx:1.25"}')
      t.equal(failingUids.includes(p.metadata.uid), false, 'a new Pod')
    }
    const remediated = await waitFor('one MirrorhookRemediated Event per failing Pod', async () => {
      const es = await events('shop', 'MirrorhookRemediated')
      return es.length >= 2 && es
    })
    t.same(remediated.map((e) => e.involvedObject.uid).sort(), failingUids, 'each failing Pod exactly once, across both replicas')
    for (const e of remediated) {
      t.equal(e.type, 'Normal')
      t.equal(e.source.component, 'mirrorhook')
      t.match(
        e.message,
        new RegExp(
          `^mirrorhook evicted so that its ReplicaSet/web-[a-z0-9]+ recreates it through admission: ` +
            `web: nginx:1\\.25 -> ${nginxMirror.replace(/\./g, '\\.')} \\((ErrImagePull|ImagePullBackOff): i/o timeout\\)$`,
        ),
      )
    }
    const acted = [a, b].map((w) => w.server.remediation!.recent().filter((r) => r.action === 'evict'))
    t.same(
      acted
        .flat()
        .map((r) => [r.uid, r.result])
        .sort(),
      failingUids.map((uid) => [uid, 'success']),
      'the two replicas together evicted each Pod once',
    )
    t.equal(acted.filter((list) => list.length > 0).length, 1, 'and only the replica holding the Lease acted')

    // The excluded namespace: its Pod still fails, no Event, no eviction.
    const sys = await pods('kube-system', 'sys')
    t.same(
      sys.map((p) => [p.metadata.uid, p.spec.containers[0].image]),
      [[sysUid, 'nginx:1.25']],
    )
    t.same(await events('kube-system', 'MirrorhookRemediated'), [])
    t.same(await events('kube-system', 'MirrorhookCannotRemediate'), [])

    const actor = [a, b].find((w) => w.server.remediation!.recent().length > 0)!
    const metrics = await (await fetch(`http://127.0.0.1:${actor.server.metricsPort}/metrics`)).text()
    t.match(metrics, /^mirrorhook_remediations_total\{action="evict",result="success"\} 2$/m)
    const state = await (await fetch(`http://127.0.0.1:${actor.server.metricsPort}/state`)).json()
    t.same(
      state.remediations.map((r: any) => [r.uid, r.action, r.result, r.owner.replace(/-[a-z0-9]+$/, '')]).sort(),
      failingUids.map((uid) => [uid, 'evict', 'success', 'ReplicaSet/web']),
      '/state lists the remediations',
    )
  })

  t.test(
    'not found and a mirror 403: left alone with one Event each; the per-owner cap holds; IMAGE_CHECK_INTERVAL=2 sets the re-check period',
    async (t) => {
      // Unregistered again: these Pods are admitted unchanged.
      const del = await cp.kubectl(['delete', 'mutatingwebhookconfiguration', 'mirrorhook'])
      t.equal(del.code, 0, del.stderr)
      await createNamespace(cp, 'cap', true)
      await create(deployment('cap', 'capped', 3))
      const capped = await failingPods('cap', 'capped', 3)
      // No node runs this one; its status is written through pods/status as the kubelet writes a pull of a missing tag.
      const missing = deployment('cap', 'missing', 1, 'quay.io/acme/missing:1')
      ;(missing.spec.template.spec as Record<string, unknown>).nodeSelector = { 'mirrorhook.test/none': 'none' }
      await create(missing)
      const [lost] = await waitFor('the missing Pod', async () => {
        const ps = await pods('cap', 'missing')
        return ps.length === 1 && ps
      })
      const NOT_FOUND =
        'rpc error: code = NotFound desc = failed to pull and unpack image "quay.io/acme/missing:1": failed to resolve reference ' +
        '"quay.io/acme/missing:1": quay.io/acme/missing:1: not found'
      const status = {
        status: {
          containerStatuses: [
            {
              name: 'web',
              image: 'quay.io/acme/missing:1',
              imageID: '',
              ready: false,
              restartCount: 0,
              state: { waiting: { reason: 'ErrImagePull', message: NOT_FOUND } },
            },
          ],
        },
      }
      const writeStatus = async (name: string, body: unknown) => {
        const r = await cp.kubectl(['patch', 'pod', name, '-n', 'cap', '--subresource=status', '--type=merge', '-p', JSON.stringify(body)])
        t.equal(r.code, 0, r.stderr)
      }
      await writeStatus(lost.metadata.name, status)
      // A Pod already on the mirror, which refuses the image (HTTP 403): back to the original only if Docker Hub is reachable.
      const redisMirror = `${MIRROR}/docker.io/library/redis:7`
      const refusedDeployment = deployment('cap', 'refused', 1, redisMirror)
      const tpl = refusedDeployment.spec.template as { metadata: Record<string, unknown>; spec: Record<string, unknown> }
      tpl.spec.nodeSelector = { 'mirrorhook.test/none': 'none' }
      tpl.metadata.annotations = { 'mirrorhook.io/original-images': '{"web":"redis:7"}' }
      await create(refusedDeployment)
      const [refused] = await waitFor('the refused Pod', async () => {
        const ps = await pods('cap', 'refused')
        return ps.length === 1 && ps
      })
      const REFUSED =
        `failed to pull and unpack image "${redisMirror}": failed to resolve reference "${redisMirror}": ` +
        `unexpected status from HEAD request to https://${MIRROR}/v2/docker.io/library/redis/manifests/7: 403 Forbidden`
      await writeStatus(refused.metadata.name, {
        status: {
          containerStatuses: [
            {
              name: 'web',
              image: redisMirror,
              imageID: '',
              ready: false,
              restartCount: 0,
              state: { waiting: { reason: 'ErrImagePull', message: REFUSED } },
            },
          ],
        },
      })

      const c = await start({ perOwnerPerHour: 1 }, { IMAGE_CHECK_INTERVAL: '2' })
      t.teardown(() => c.stop())
      await registerWebhook(cp, c, 'cap', 'busybox:1.36')
      const remediation = c.server.remediation!
      t.equal(remediation.intervalMs, 2000, 'IMAGE_CHECK_INTERVAL=2: a re-check every 2 s')

      await waitFor('the not-found and the refused Pod: a MirrorhookCannotRemediate Event each', async () => {
        const es = await events('cap', 'MirrorhookCannotRemediate')
        return es.length >= 2 && es
      })
      await waitFor('one MirrorhookRemediated Event in cap', async () => (await events('cap', 'MirrorhookRemediated')).length > 0)
      // Two more re-checks, each 2 s after the one before.
      const checks: number[] = [remediation.lastCheckAt]
      await waitFor(
        'two more re-checks',
        async () => {
          if (remediation.lastCheckAt !== checks.at(-1)) checks.push(remediation.lastCheckAt)
          return checks.length >= 3
        },
        30_000,
      )
      for (let i = 1; i < checks.length; i++)
        t.ok(checks[i]! - checks[i - 1]! >= 2000, `re-check ${i}: ${checks[i]! - checks[i - 1]!} ms after the one before`)

      const again = await events('cap', 'MirrorhookCannotRemediate')
      t.same(
        again.map((e) => [e.involvedObject.uid, e.type, e.message]).sort(),
        [
          [
            lost.metadata.uid,
            'Warning',
            'mirrorhook cannot fix this pull: web: quay.io/acme/missing:1 failed (not found): a mirror cannot serve an image that does not exist',
          ],
          [
            refused.metadata.uid,
            'Warning',
            `mirrorhook cannot fix this pull: web: ${redisMirror} failed (HTTP 403 Forbidden): the mirror refused it and docker.io is unreachable (listed in config unreachable)`,
          ],
        ].sort(),
        'each said once, not again at each re-check: no loop',
      )
      t.same(
        (await pods('cap', 'refused')).map((p) => [p.metadata.uid, p.spec.containers[0].image]),
        [[refused.metadata.uid, redisMirror]],
        'the refused Pod is left as it is',
      )
      const remediated = await events('cap', 'MirrorhookRemediated')
      t.equal(remediated.length, 1, 'perOwnerPerHour: 1 — one Pod of the ReplicaSet evicted')
      t.same(
        capped.filter((p) => p.metadata.uid === remediated[0].involvedObject.uid).map((p) => p.metadata.uid),
        [remediated[0].involvedObject.uid],
        'and it is one of the capped Deployment’s',
      )
      const left = (await pods('cap', 'capped')).filter((p) => p.metadata.uid !== remediated[0].involvedObject.uid)
      const before = capped.map((p) => p.metadata.uid)
      const stillFailing = left.filter((p) => before.includes(p.metadata.uid))
      t.equal(stillFailing.length, 2, 'the other two Pods are still the ones that failed')
      t.same(
        stillFailing.map((p) => p.spec.containers[0].image),
        ['nginx:1.25', 'nginx:1.25'],
      )
      const metrics = await (await fetch(`http://127.0.0.1:${c.server.metricsPort}/metrics`)).text()
      t.match(metrics, /^mirrorhook_remediations_total\{action="none",result="not-found"\} 1$/m)
      // One wait per re-check while the cap holds: at least one, how many depends on the re-checks so far.
      t.match(metrics, /^mirrorhook_remediation_waits_total\{verdict="wait",code="owner-cap"\} [1-9]\d*$/m)
    },
  )

  t.test('bare Pods follow remediation.barePods: left alone with one Event, or patched in place', async (t) => {
    const del = await cp.kubectl(['delete', 'mutatingwebhookconfiguration', 'mirrorhook'])
    t.equal(del.code, 0, del.stderr)
    await createNamespace(cp, 'bare', true)
    const bare = (name: string) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'bare', labels: { app: name } },
      spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
    })
    await create(bare('solo'))
    const [solo] = await failingPods('bare', 'solo', 1)

    // leave (the default): an eviction would lose the Pod; one Event says what it should pull.
    const leave = await start({})
    await registerWebhook(cp, leave, 'bare', 'busybox:1.36')
    const said = await waitFor('one MirrorhookCannotRemediate Event on the bare Pod', async () => {
      const es = await events('bare', 'MirrorhookCannotRemediate')
      return es.length > 0 && es
    })
    t.same(
      said.map((e) => [e.involvedObject.uid, e.message]),
      [
        [
          solo.metadata.uid,
          `mirrorhook cannot fix this pull: no controller would recreate this Pod (remediation.barePods is leave); it should pull ${nginxMirror}`,
        ],
      ],
    )
    await leave.stop()

    // patch: the image replaced in place (through the webhook as an UPDATE), the original recorded.
    const patcher = await start({ barePods: 'patch' })
    t.teardown(() => patcher.stop())
    await registerWebhook(cp, patcher, 'bare', 'busybox:1.36')
    const patched = await waitFor('the bare Pod patched to the mirror reference', async () => {
      const [p] = await pods('bare', 'solo')
      return p?.spec.containers[0].image === nginxMirror && p
    })
    t.equal(patched.metadata.uid, solo.metadata.uid, 'the same Pod')
    t.equal(patched.metadata.annotations['mirrorhook.io/original-images'], '{"web":"nginx:1.25"}')
    t.match(
      patched.metadata.annotations['mirrorhook.io/remediated'],
      new RegExp(`^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z ${solo.metadata.uid}$`),
    )
    const done = await waitFor('one MirrorhookRemediated Event', async () => {
      const es = await events('bare', 'MirrorhookRemediated')
      return es.length > 0 && es
    })
    t.same(
      done.map((e) => [e.involvedObject.uid, e.message.replace(/\((ErrImagePull|ImagePullBackOff): /, '(<reason>: ')]),
      [[solo.metadata.uid, `mirrorhook image patched in place: web: nginx:1.25 -> ${nginxMirror} (<reason>: i/o timeout)`]],
    )
    const up = await waitFor('the patched Pod running', async () => {
      const [p] = await pods('bare', 'solo')
      return running(p) && p
    })
    t.equal(up.spec.containers[0].image, nginxMirror)
  })

  // The remediation metrics of one instance, as Prometheus reads them.
  const metricsOf = async (w: TestWebhook) => (await fetch(`http://127.0.0.1:${w.server.metricsPort}/metrics`)).text()
  const checksOf = async (w: TestWebhook) => Number(/^mirrorhook_remediation_checks_total (\d+)$/m.exec(await metricsOf(w))?.[1] ?? NaN)
  const acting = (w: TestWebhook) =>
    waitFor('the instance holds the remediation Lease', async () => /^mirrorhook_remediation_leader 1$/m.test(await metricsOf(w)))
  const NETWORK =
    'failed to pull and unpack image "docker.io/library/nginx:1.25": failed to resolve reference "docker.io/library/nginx:1.25": ' +
    'failed to do request: Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.25": dial tcp 198.51.100.7:443: i/o timeout'
  // Earlier namespaces opted out: a new instance would otherwise look at their Pods too.
  const optOut = (...names: string[]) => Promise.all(names.map((n) => createNamespace(cp, n, false)))
  const unscheduled = (d: ReturnType<typeof deployment>) => {
    ;(d.spec.template.spec as Record<string, unknown>).nodeSelector = { 'mirrorhook.test/none': 'none' }
    return d
  }

  t.test(
    'a PodDisruptionBudget holds for Running Pods: the refused eviction is counted, logged, retried, done once the budget allows it',
    async (t) => {
      const del = await cp.kubectl(['delete', 'mutatingwebhookconfiguration', 'mirrorhook', '--ignore-not-found'])
      t.equal(del.code, 0, del.stderr)
      await optOut('shop', 'cap', 'bare')
      await createNamespace(cp, 'pdb', true)
      // No node runs these: their status is written through pods/status as the kubelet writes a Running Pod
      // whose web container (imagePullPolicy Always) restarted and now waits on its pull, its sidecar running.
      const d = unscheduled(deployment('pdb', 'guarded', 2))
      d.spec.template.spec.containers = [
        { name: 'web', image: 'nginx:1.25', imagePullPolicy: 'Always' } as { name: string; image: string },
        { name: 'sidecar', image: 'registry.k8s.io/pause:3.10' },
      ]
      await create(d)
      const guarded = await waitFor('the 2 guarded Pods', async () => {
        const ps = await pods('pdb', 'guarded')
        return ps.length === 2 && ps
      })
      const at = new Date(Date.now() - 120_000).toISOString()
      const later = new Date(Date.now() - 60_000).toISOString()
      const unready = {
        status: 'False',
        reason: 'ContainersNotReady',
        message: 'containers with unready status: [web]',
        lastTransitionTime: later,
      }
      for (const [i, p] of guarded.entries()) {
        const status = {
          status: {
            phase: 'Running',
            startTime: at,
            podIP: `10.244.7.${i + 10}`,
            podIPs: [{ ip: `10.244.7.${i + 10}` }],
            conditions: [
              { type: 'PodReadyToStartContainers', status: 'True', lastTransitionTime: at },
              { type: 'Initialized', status: 'True', lastTransitionTime: at },
              { type: 'Ready', ...unready },
              { type: 'ContainersReady', ...unready },
              { type: 'PodScheduled', status: 'True', lastTransitionTime: at },
            ],
            containerStatuses: [
              {
                name: 'sidecar',
                image: 'registry.k8s.io/pause:3.10',
                imageID: 'registry.k8s.io/pause@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a',
                containerID: `containerd://${'a'.repeat(63)}${i}`,
                ready: true,
                started: true,
                restartCount: 0,
                state: { running: { startedAt: at } },
              },
              {
                name: 'web',
                image: 'docker.io/library/nginx:1.25',
                imageID: 'docker.io/library/nginx@sha256:a484819eb60211f5299034ac80f6a681b06f89e65866ce91f356ed7c72af059c',
                containerID: `containerd://${'b'.repeat(63)}${i}`,
                ready: false,
                started: false,
                restartCount: 1,
                lastState: {
                  terminated: {
                    exitCode: 137,
                    reason: 'Error',
                    startedAt: at,
                    finishedAt: later,
                    containerID: `containerd://${'b'.repeat(63)}${i}`,
                  },
                },
                state: {
                  waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "nginx:1.25": ErrImagePull: ${NETWORK}` },
                },
              },
            ],
          },
        }
        const r = await cp.kubectl([
          'patch',
          'pod',
          p.metadata.name,
          '-n',
          'pdb',
          '--subresource=status',
          '--type=merge',
          '-p',
          JSON.stringify(status),
        ])
        t.equal(r.code, 0, r.stderr)
      }
      const guardedUids = guarded.map((p) => p.metadata.uid).sort()
      await create({
        apiVersion: 'policy/v1',
        kind: 'PodDisruptionBudget',
        metadata: { name: 'guarded', namespace: 'pdb' },
        spec: { minAvailable: 2, selector: { matchLabels: { app: 'guarded' } } },
      })

      const lines: any[] = []
      const w = await startTestWebhook({
        config: webhookConfig({}),
        logger: pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) }),
        extra: { kube: { kubeConfig: kc, source: cp.kubeconfigPath }, metricsPort: 0, env: { POD_NAMESPACE: 'mirrorhook' } },
      })
      t.teardown(() => w.stop())
      await registerWebhook(cp, w, 'pdb', 'busybox:1.36')
      const remediation = w.server.remediation!

      // Refused (429) at one re-check and again at the next: never marked remediated.
      const blocked = await waitFor('each guarded Pod refused twice', async () => {
        const rs = remediation.recent().filter((r) => r.result === 'blocked')
        return guardedUids.every((uid) => rs.filter((r) => r.uid === uid).length >= 2) && rs
      })
      for (const r of blocked) {
        t.same([r.namespace, r.action, r.result, r.owner?.replace(/-[a-z0-9]+$/, '')], ['pdb', 'evict', 'blocked', 'ReplicaSet/guarded'])
        t.match(
          r.reason,
          /^evict Pod pdb\/guarded-[a-z0-9]+-[a-z0-9]+: 429 Cannot evict pod as it would violate the pod's disruption budget\.$/,
        )
      }
      t.same(
        (await pods('pdb', 'guarded')).map((p) => [p.metadata.uid, p.metadata.deletionTimestamp ?? null]).sort(),
        guardedUids.map((uid) => [uid, null]),
        'both Pods still there, not being deleted',
      )
      t.same(await events('pdb', 'MirrorhookRemediated'), [], 'no Event says they were remediated')
      t.same(await events('pdb', 'MirrorhookCannotRemediate'), [])
      t.same(
        remediation.recent().filter((r) => r.namespace === 'pdb' && r.result !== 'blocked'),
        [],
        'nothing but refusals',
      )
      t.match(await metricsOf(w), /^mirrorhook_remediations_total\{action="evict",result="blocked"\} ([4-9]|\d\d+)$/m)
      t.notMatch(await metricsOf(w), /mirrorhook_remediations_total\{action="evict",result="success"\}/)
      const warned = lines.filter((l) => l.level === 40 && l.result === 'blocked')
      t.ok(warned.length >= 4, `one warning per refusal (${warned.length})`)
      for (const l of warned) {
        t.match(
          l.msg,
          /^remediation of pod pdb\/guarded-[a-z0-9]+-[a-z0-9]+ by evict did not happen \(blocked\); looked at again at the next re-check$/,
        )
        t.match(
          l.err,
          /^evict Pod pdb\/guarded-[a-z0-9]+-[a-z0-9]+: 429 Cannot evict pod as it would violate the pod's disruption budget\.$/,
        )
      }

      // Pods waiting on a pull are not Ready: the budget counts none healthy, and allows no disruption.
      const budget = await cp.kubectl(['get', 'pdb', 'guarded', '-n', 'pdb', '-o', 'jsonpath={.status}'])
      const { currentHealthy, desiredHealthy, disruptionsAllowed, expectedPods } = JSON.parse(budget.stdout)
      t.strictSame(
        { currentHealthy, desiredHealthy, disruptionsAllowed, expectedPods },
        { currentHealthy: 0, desiredHealthy: 2, disruptionsAllowed: 0, expectedPods: 2 },
      )
      // The budget relaxed for Pods that are not Ready (still minAvailable 2): evicted at the next re-check, once each.
      const relax = await cp.kubectl([
        'patch',
        'pdb',
        'guarded',
        '-n',
        'pdb',
        '--type=merge',
        '-p',
        '{"spec":{"unhealthyPodEvictionPolicy":"AlwaysAllow"}}',
      ])
      t.equal(relax.code, 0, relax.stderr)
      const done = await waitFor('a MirrorhookRemediated Event for each guarded Pod', async () => {
        const es = await events('pdb', 'MirrorhookRemediated')
        return es.length >= 2 && es
      })
      t.same(done.map((e) => e.involvedObject.uid).sort(), guardedUids)
      const now = await waitFor('the guarded Pods replaced', async () => {
        const ps = (await pods('pdb', 'guarded')).filter((p) => !p.metadata.deletionTimestamp)
        return ps.length === 2 && ps.every((p) => !guardedUids.includes(p.metadata.uid)) && ps
      })
      t.same(
        now.map((p) => p.spec.containers.map((c: any) => c.image)),
        [
          [nginxMirror, 'registry.k8s.io/pause:3.10'],
          [nginxMirror, 'registry.k8s.io/pause:3.10'],
        ],
        'recreated through admission with the mirror reference',
      )
      t.match(await metricsOf(w), /^mirrorhook_remediations_total\{action="evict",result="success"\} 2$/m)
    },
  )

  t.test('dry-run never reaches remediation: nothing stored, nothing evicted, said or counted', async (t) => {
    const del = await cp.kubectl(['delete', 'mutatingwebhookconfiguration', 'mirrorhook', '--ignore-not-found'])
    t.equal(del.code, 0, del.stderr)
    await optOut('shop', 'cap', 'bare', 'pdb')
    await createNamespace(cp, 'dry', true)
    await create(unscheduled(deployment('dry', 'pending', 1)))
    const [pending] = await waitFor('the pending Pod', async () => {
      const ps = await pods('dry', 'pending')
      return ps.length === 1 && ps
    })
    const failingStatus = {
      status: {
        containerStatuses: [
          {
            name: 'web',
            image: 'nginx:1.25',
            imageID: '',
            ready: false,
            restartCount: 0,
            state: { waiting: { reason: 'ErrImagePull', message: NETWORK } },
          },
        ],
      },
    }
    const w = await start({})
    t.teardown(() => w.stop())
    await registerWebhook(cp, w, 'dry', 'busybox:1.36')
    await acting(w)

    // A Pod whose image would fail, applied with --dry-run=server: the webhook answers, nothing is stored.
    const dry = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'dry-web', namespace: 'dry', labels: { app: 'dry-web' } },
      spec: { containers: [{ name: 'web', image: 'nginx:1.25' }] },
    }
    const applied = await cp.kubectl(['apply', '--dry-run=server', '-o', 'json', '-f', '-'], { input: JSON.stringify(dry) })
    t.equal(applied.code, 0, applied.stderr)
    t.equal(JSON.parse(applied.stdout).spec.containers[0].image, nginxMirror, 'the webhook answered the dry-run')
    // The failing status itself, written as a dry-run: not stored, never seen by the Pod watch.
    const dryStatus = await cp.kubectl([
      'patch',
      'pod',
      pending.metadata.name,
      '-n',
      'dry',
      '--subresource=status',
      '--type=merge',
      '--dry-run=server',
      '-p',
      JSON.stringify(failingStatus),
    ])
    t.equal(dryStatus.code, 0, dryStatus.stderr)

    // Two re-checks after both, with minFailingSeconds 1 and the Lease held.
    const from = await checksOf(w)
    await waitFor('two more re-checks', async () => (await checksOf(w)) >= from + 2, 30_000)
    t.same(await pods('dry', 'dry-web'), [], 'the dry-run Pod was not stored')
    t.same(
      (await pods('dry', 'pending')).map((p) => [p.metadata.uid, p.metadata.deletionTimestamp ?? null, p.status.containerStatuses ?? null]),
      [[pending.metadata.uid, null, null]],
      'the Pod is as it was: not failing, not evicted',
    )
    t.same(await events('dry', 'MirrorhookRemediated'), [])
    t.same(await events('dry', 'MirrorhookCannotRemediate'), [])
    t.same(w.server.remediation!.recent(), [], '/state lists nothing')
    const metrics = await metricsOf(w)
    t.notMatch(metrics, /^mirrorhook_remediations_total\{/m, 'no remediation counted')
    t.notMatch(metrics, /^mirrorhook_remediation_waits_total\{/m, 'no failing Pod looked at')

    // The same status written for real is acted on: the checks above could have failed.
    const real = await cp.kubectl([
      'patch',
      'pod',
      pending.metadata.name,
      '-n',
      'dry',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify(failingStatus),
    ])
    t.equal(real.code, 0, real.stderr)
    const evicted = await waitFor('the really failing Pod remediated', async () => {
      const es = await events('dry', 'MirrorhookRemediated')
      return es.length > 0 && es
    })
    t.same(
      evicted.map((e) => e.involvedObject.uid),
      [pending.metadata.uid],
    )
  })
}
