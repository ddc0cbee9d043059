// The chart's shutdown and memory settings: the grace period must cover the longest
// shutdown the configuration allows, and the memory limit the measured burst peak.
import t from 'tap'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { defaultBinDir, REPO_ROOT } from '../support/controlplane.js'
import { isCI } from '../support/tap-cluster.js'

const CHART = join(REPO_ROOT, 'charts', 'mirrorhook')
const HELM = join(defaultBinDir(), 'helm')

async function template(values: Record<string, unknown>): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-shutdown-'))
  try {
    await writeFile(join(dir, 'values.yaml'), JSON.stringify(values))
    return await new Promise((resolve) => {
      const child = spawn(HELM, ['template', 'mirrorhook', CHART, '--namespace', 'mirrorhook', '-f', join(dir, 'values.yaml')], {
        env: { ...process.env, HELM_CACHE_HOME: join(dir, 'cache'), HELM_CONFIG_HOME: join(dir, 'config') },
      })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d) => (stdout += d))
      child.stderr.on('data', (d) => (stderr += d))
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))
    })
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

function podSpec(stdout: string) {
  const deployment = parseAllDocuments(stdout)
    .map((d) => d.toJS())
    .find((m) => m?.kind === 'Deployment')
  return deployment.spec.template.spec
}

if (!existsSync(HELM)) {
  const message = `helm not found at ${HELM}: run npm run k8s:build`
  if (isCI()) t.fail(message)
  else t.plan(0, message)
} else {
  t.test('memory sized from the burst benchmark; grace period above the longest shutdown', async (t) => {
    const r = await template({})
    t.equal(r.code, 0, r.stderr)
    const pod = podSpec(r.stdout)
    t.strictSame(pod.containers[0].resources, { requests: { cpu: '50m', memory: '256Mi' }, limits: { memory: '640Mi' } })
    // 5 s shutdown delay + 10 s drain (default) + 2 × 5 s final steps = 25 s.
    t.equal(pod.terminationGracePeriodSeconds, 30)
  })

  t.test('a drain timeout the grace period cannot cover is refused at install', async (t) => {
    const refused = await template({ config: { server: { drainTimeoutSeconds: 20 } } })
    t.equal(refused.code, 1)
    t.equal(
      refused.stderr,
      'Error: execution error at (mirrorhook/templates/deployment.yaml:8:4): terminationGracePeriodSeconds (30) must exceed the longest shutdown, 35 s: the 5 s shutdown delay, config.server.drainTimeoutSeconds (20) and 10 s of final steps\n\nUse --debug flag to render out invalid YAML\n',
    )
    t.equal(refused.stdout, '', 'nothing rendered')
    const longer = await template({ config: { server: { drainTimeoutSeconds: 20 } }, terminationGracePeriodSeconds: 40 })
    t.equal(longer.code, 0, longer.stderr)
    t.equal(podSpec(longer.stdout).terminationGracePeriodSeconds, 40)
  })
}
