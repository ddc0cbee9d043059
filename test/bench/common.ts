// What the benchmarks against a real API server share: the binaries check, a plain HTTP GET
// (metrics and state endpoints) and the sum of a Prometheus sample.
import { type ChildProcessByStdio, spawn } from 'node:child_process'
import http from 'node:http'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { checkBinaries } from '../support/controlplane.js'

/** Exits with a message (status 2) when the control-plane binaries are not built. */
export function requireBinaries(): void {
  const bins = checkBinaries()
  if (!bins.ok) {
    console.error(bins.message)
    process.exit(2)
  }
}

export function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let body = ''
        res.on('data', (d) => (body += d))
        res.on('end', () => resolve(body))
      })
      .on('error', reject)
  })
}

/** The sum of the samples of metric `name` whose line contains every label fragment given. */
export function sample(text: string, name: string, labels: string | string[] = []): number {
  const fragments = typeof labels === 'string' ? [labels] : labels
  let sum = 0
  for (const line of text.split('\n'))
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{') && fragments.every((l) => line.includes(l)))
      sum += Number(line.split(' ').at(-1))
  return sum
}

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/**
 * `mirrorhook serve` from source against an API server: TLS and metrics on free loopback ports,
 * development certificates in `devCertDir`, JSON log lines on stdout. `env` adds to the
 * process's (KUBECONFIG, POD_NAMESPACE, …); the in-cluster service host is cleared.
 */
export function spawnServe(configPath: string, devCertDir: string, env: NodeJS.ProcessEnv): ChildProcessByStdio<null, Readable, null> {
  return spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(ROOT, 'server/cli.ts'),
      'serve',
      '--config',
      configPath,
      '--host',
      '127.0.0.1',
      '--port',
      '0',
      '--metrics-port',
      '0',
      '--dev-cert-dir',
      devCertDir,
    ],
    { env: { ...process.env, LOG_LEVEL: 'info', KUBERNETES_SERVICE_HOST: '', ...env }, stdio: ['ignore', 'pipe', 'inherit'], cwd: ROOT },
  )
}
