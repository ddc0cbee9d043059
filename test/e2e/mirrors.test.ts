// Two mirrors for one registry, on a real API server: two distribution registries on loopback
// stand for them, probed as mirrors are (reachability.probes with their CAs). Stopping the
// first (SIGSTOP: it no longer answers) sends new Pods to the second, and back when it returns;
// each mirror's allowlist decides which repositories it is offered.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { pino } from 'pino'
import { stringify } from 'yaml'
import { runCli, until } from '../support/helpers.js'
import { startRegistry } from '../support/registry.js'
import { withControlPlane } from '../support/tap-cluster.js'
import { createNamespace, registerWebhook, startTestWebhook } from '../support/webhook.js'

const cp = await withControlPlane(t)

if (cp) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-mirrors-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const first = await startRegistry()
  const second = await startRegistry()
  let firstStopped = false
  t.teardown(async () => {
    if (firstStopped) process.kill(first.pid, 'SIGCONT')
    await Promise.all([first.stop(), second.stop()])
  })
  const caFile = path.join(dir, 'mirrors-ca.pem')
  writeFileSync(caFile, `${first.caPem.trimEnd()}\n${second.caPem}`)
  const firstList = path.join(dir, 'first-allows.txt')
  const secondList = path.join(dir, 'second-allows.txt')
  writeFileSync(firstList, 'quay.io/acme/*\n')
  writeFileSync(secondList, 'quay.io/acme/*\nquay.io/shared/**\n')

  const config = {
    mirror: { prefix: [first.host, second.host], allowlists: { [first.host]: firstList, [second.host]: secondList } },
    registries: ['quay.io'],
    // The source is down: every eligible image wants a mirror; which one is what this file is about.
    unreachable: ['quay.io'],
    mode: 'auto',
    kubeFledged: { enabled: false },
    reachability: {
      // Only the two mirrors are probed (quay.io is listed unreachable), both on loopback.
      probes: {
        intervalSeconds: 0.5,
        recheckSeconds: 0.2,
        // Two missed answers of 3 s each: a loaded machine's one slow handshake is not an outage.
        timeoutSeconds: 3,
        maxBackoffSeconds: 1,
        failureThreshold: 2,
        successThreshold: 1,
        jitter: 0,
        caFile,
      },
      learning: { enabled: false },
      persistence: { enabled: false },
    },
  }
  const configFile = path.join(dir, 'config.yaml')
  writeFileSync(configFile, stringify(config))
  const kube = { kubeConfig: await cp.kubeConfig(), source: cp.kubeconfigPath }
  const logger = pino({ level: process.env.MIRRORHOOK_TEST_LOG_LEVEL ?? 'silent' })
  await createNamespace(cp, 'shop', true)
  const webhook = await startTestWebhook({ config, logger, extra: { kube, metricsPort: 0, allowlists: { fileCheckMs: 100 } } })
  t.teardown(() => webhook.stop())
  await registerWebhook(cp, webhook, 'shop', 'quay.io/acme/probe:1')

  let pods = 0
  async function createPod(image: string): Promise<{ image: string; warnings: string }> {
    pods += 1
    const r = await cp!.kubectl(['create', '-o', 'json', '-f', '-'], {
      input: JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `app-${pods}`, namespace: 'shop' },
        spec: { containers: [{ name: 'app', image }] },
      }),
    })
    if (r.code !== 0) throw new Error(r.stderr)
    return { image: JSON.parse(r.stdout).spec.containers[0].image, warnings: r.stderr }
  }
  // kubectl's line for one mirrorhook warning; the webhook cuts a warning at 256 characters with '…'.
  const warning = (text: string) => {
    const full = `mirrorhook: ${text}`
    return `Warning: ${full.length <= 256 ? full : `${full.slice(0, 255)}…`}\n`
  }
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const health = (host: string) => webhook.server.reachability!.view().status(host).state
  const waitHealth = (host: string, state: string) =>
    until(`${host} ${state}`, async () => (health(host) === state ? true : undefined), 30_000)

  t.test('both mirrors up: the first one', async (t) => {
    await waitHealth(first.host, 'reachable')
    await waitHealth(second.host, 'reachable')
    const pod = await createPod('quay.io/acme/app:1')
    t.equal(pod.image, `${first.host}/quay.io/acme/app:1`)
    t.equal(
      pod.warnings,
      `Warning: mirrorhook: app: quay.io/acme/app:1 -> ${first.host}/quay.io/acme/app:1 (registry quay.io is unreachable (listed in config unreachable))\n`,
    )
  })

  t.test('the first mirror stops: new Pods go to the second, and back when it returns', async (t) => {
    process.kill(first.pid, 'SIGSTOP')
    firstStopped = true
    await waitHealth(first.host, 'unreachable')
    const during = await createPod('quay.io/acme/app:2')
    t.equal(during.image, `${second.host}/quay.io/acme/app:2`)
    // The time the first mirror went down is the one free part of the warning.
    const since = /, since (\S+)\)\); /.exec(during.warnings)?.[1]
    t.match(since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'since when the first mirror is down')
    t.equal(
      during.warnings,
      warning(
        `app: quay.io/acme/app:2 -> ${second.host}/quay.io/acme/app:2 (mirror ${second.host} chosen (mirror ${first.host} is unreachable ` +
          `(probe: no answer within 3 s, since ${since})); registry quay.io is unreachable (listed in config unreachable))`,
      ),
    )

    process.kill(first.pid, 'SIGCONT')
    firstStopped = false
    await waitHealth(first.host, 'reachable')
    const after = await createPod('quay.io/acme/app:3')
    t.equal(after.image, `${first.host}/quay.io/acme/app:3`)
  })

  t.test("an image off the first mirror's allowlist goes to the second; off both, it is kept with the reason", async (t) => {
    const shared = await createPod('quay.io/shared/tool:1')
    t.equal(shared.image, `${second.host}/quay.io/shared/tool:1`)
    t.equal(
      shared.warnings,
      warning(
        `app: quay.io/shared/tool:1 -> ${second.host}/quay.io/shared/tool:1 (mirror ${second.host} chosen (quay.io/shared/tool is not ` +
          `on the allowlist of mirror ${first.host} (${firstList}, 1 patterns)); registry quay.io is unreachable (listed in config unreachable))`,
      ),
    )

    const kept = await createPod('quay.io/private/app:1')
    t.equal(kept.image, 'quay.io/private/app:1', 'not rewritten')
    t.equal(
      kept.warnings,
      warning(
        `app: quay.io/private/app:1 left unchanged: no mirror can serve it: quay.io/private/app is not on the allowlist of mirror ` +
          `${first.host} (${firstList}, 1 patterns); quay.io/private/app is not on the allowlist of mirror ${second.host} (${secondList}, 2 patterns)`,
      ),
    )

    // The list changes on disk: the next Pod follows it.
    writeFileSync(firstList, 'quay.io/acme/*\nquay.io/shared/**\n')
    await until(
      'the new list in use',
      async () => (webhook.server.allowlists!.get(first.host)?.list.patterns === 2 ? true : undefined),
      10_000,
    )
    t.equal((await createPod('quay.io/shared/tool:2')).image, `${first.host}/quay.io/shared/tool:2`)
  })

  t.test('mirrorhook state shows each mirror; mirrorhook rewrite the decision with its reasons', async (t) => {
    const url = `http://127.0.0.1:${webhook.server.metricsPort}`
    const state = await runCli(['state', '--url', url, '-c', configFile])
    t.equal(state.code, 0, state.stderr)
    // The whole output, anchored: times, ages, probe counts and latencies (and the column widths they set) are the free parts.
    const T = '\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ'
    const probed = [first.host, second.host]
      .sort((a, b) => a.localeCompare(b))
      .map((h) => `${esc(h)} +reachable +${T} \\(\\d+[sm] ago\\) +${T} +probe: HTTP 200 in \\d+ ms, \\d+x, since ${T}\\n`)
      .join('')
    const list = (host: string, file: string) =>
      `${esc(host)} +prefix +reachable +0 +${esc(file)}: 2 patterns, 33 bytes, loaded \\d+[sm] ago\\n`
    t.match(
      state.stdout,
      new RegExp(
        '^REGISTRY +STATE +SINCE +EXPIRES +EVIDENCE\\n' +
          'quay\\.io +unreachable +- +never +listed in config unreachable\\n' +
          probed +
          '\\nMIRROR +FOR +HEALTH +REFUSALS +ALLOWLIST\\n' +
          list(first.host, firstList) +
          list(second.host, secondList) +
          `\\nsource: ${esc(url)}/state, written ${T.replace('Z', '\\.\\d{3}Z')} by \\S+\\n$`,
      ),
    )

    const rewrite = await runCli(['rewrite', '-c', configFile, '--url', url, 'quay.io/private/app:1', 'quay.io/acme/app:4'])
    t.equal(rewrite.code, 0, rewrite.stderr)
    t.equal(
      rewrite.stdout,
      `quay.io/private/app:1 kept: no mirror can serve it: quay.io/private/app is not on the allowlist of mirror ${first.host} ` +
        `(${firstList}, 2 patterns); quay.io/private/app is not on the allowlist of mirror ${second.host} (${secondList}, 2 patterns)\n` +
        `quay.io/acme/app:4 -> ${first.host}/quay.io/acme/app:4 (registry quay.io is unreachable (listed in config unreachable))\n`,
    )
  })
}
