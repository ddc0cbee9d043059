// SIGTERM against a real API server: `mirrorhook serve` with keep-alive clients and a review in
// flight drains, then runs its final steps; the last state sync writes the ConfigMap that was
// removed after the regular sync, so only the final one can have written it again.
import t from 'tap'
import { CoreV1Api } from '@kubernetes/client-node'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { podReview, until } from '../support/helpers.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { createNamespace } from '../support/webhook.js'

const CLI = new URL('../../server/cli.ts', import.meta.url).pathname
const NS = 'mirrorhook'
const TIMEOUT =
  'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "quay.io/acme/app:1": failed to resolve reference "quay.io/acme/app:1": failed to do request: Head "https://quay.io/v2/acme/app/manifests/1": dial tcp 54.1.2.3:443: i/o timeout'

interface Logged {
  msg: string
  [key: string]: unknown
}

const cp = await withControlPlane(t)

if (cp) {
  const core = (await cp.kubeConfig()).makeApiClient(CoreV1Api)
  await createNamespace(cp, NS, false)
  await createNamespace(cp, 'shop', true)

  t.test('SIGTERM: connections drained, the final state sync writes the ConfigMap, the process exits', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-e2e-sigterm-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    await writeFile(
      join(dir, 'config.yaml'),
      stringify({
        mode: 'auto',
        registries: ['quay.io'],
        kubeFledged: { enabled: false },
        // No probes: nothing may leave the machine. Regular syncs only after an hour.
        reachability: { probes: { enabled: false }, persistence: { syncSeconds: 3600 } },
        server: { drainTimeoutSeconds: 5 },
      }),
    )
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        CLI,
        'serve',
        '--config',
        join(dir, 'config.yaml'),
        '--host',
        '127.0.0.1',
        '--port',
        '0',
        '--metrics-port',
        '0',
        '--dev-cert-dir',
        dir,
      ],
      {
        env: { PATH: process.env.PATH ?? '', HOME: dir, KUBECONFIG: cp.kubeconfigPath, POD_NAMESPACE: NS, LOG_LEVEL: 'info' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    const lines: Logged[] = []
    let buffered = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      const parts = buffered.split('\n')
      buffered = parts.pop() ?? ''
      for (const line of parts.filter(Boolean)) lines.push(JSON.parse(line) as Logged)
    })
    child.stderr.on('data', (c) => (stderr += c))
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    })
    const listening = await until('the server to listen', async () => lines.find((l) => l.msg.startsWith('mirrorhook listening')), 90_000)
    const port = listening.port as number
    const ops = `http://127.0.0.1:${listening.metricsPort as number}`

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
    const ca = await readFile(join(dir, 'ca.crt'), 'utf8')
    const agent = new Agent({ keepAlive: true, ca })
    t.teardown(() => agent.destroy())
    const review = JSON.stringify(podReview('e2e-sigterm', ['quay.io/acme/app:2']))
    // The review in flight comes on a connection of its own, open (TLS done) before SIGTERM.
    const second = new Agent({ keepAlive: true, ca })
    t.teardown(() => second.destroy())
    let secured = false
    const post = (body: string, onSocket?: (end: () => void) => void) =>
      new Promise<{ status: number; connection?: string }>((resolve, reject) => {
        const req = request(
          {
            host: '127.0.0.1',
            port,
            path: '/mutate',
            method: 'POST',
            agent: onSocket ? second : agent,
            headers: { 'content-type': 'application/json', 'content-length': body.length },
          },
          (res) => res.resume().on('end', () => resolve({ status: res.statusCode ?? 0, connection: res.headers.connection })),
        )
        req.on('error', reject)
        if (onSocket) {
          req.on('socket', (socket) => socket.once('secureConnect', () => (secured = true)))
          req.write(body.slice(0, 10))
          onSocket(() => req.end(body.slice(10)))
        } else req.end(body)
      })
    t.same(await post(review), { status: 200, connection: 'keep-alive' })
    const idle = Object.values(agent.freeSockets).flat()[0]!
    let idleClosed = false
    idle.once('close', () => (idleClosed = true))
    const inFlight = post(review, (end) => {
      void until('shutdown to begin', async () => lines.find((l) => l.msg.startsWith('shutting down')), 60_000).then(end)
    })
    await until('the review to be in flight', async () => (secured ? true : undefined))

    child.kill('SIGTERM')
    t.same(await inFlight, { status: 200, connection: 'close' }, 'the in-flight review is answered, its connection closed')
    const [code, signal] = await until(
      'the process to exit',
      async () => (child.exitCode !== null || child.signalCode !== null ? exited : undefined),
      60_000,
    )
    t.same([code, signal], [0, null], stderr)
    t.ok(idleClosed, 'the idle keep-alive connection was closed by the server')
    t.same(lines.find((l) => l.msg === 'stopped')?.steps, ['remediation stop: done', 'final state sync: done'])
    t.notOk(
      lines.find((l) => l.msg.startsWith('drain timeout reached')),
      'drained before the drain timeout',
    )
    const written = await cp.kubectl(configMap)
    t.equal(written.code, 0, written.stderr)
    t.match(
      JSON.parse(JSON.parse(written.stdout)['state.json'] ?? '{}'),
      { registries: [{ registry: 'quay.io', state: 'unreachable' }] },
      'the final sync wrote it',
    )
  })
}
