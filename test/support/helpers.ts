// Small helpers shared by the tests: the CLI as a child process, polling, and AdmissionReviews.
import { spawn } from 'node:child_process'

const CLI = new URL('../../server/cli.ts', import.meta.url).pathname

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/**
 * Runs `mirrorhook ARGS` as an operator would, with a minimal environment plus `env`
 * (and NODE_OPTIONS, which carries the tests' loopback-only guard: test/support/offline-guard.mjs).
 */
export function runCli(args: string[], options: { stdin?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent', NODE_OPTIONS: process.env.NODE_OPTIONS ?? '', ...options.env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }))
    child.stdin.end(options.stdin ?? '')
  })
}

/** Polls `fn` until it returns a value, or fails naming `what`. */
export async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** An admission.k8s.io/v1 review of a Pod CREATE with one container per image. */
export function podReview(uid: string, images: readonly string[], options: { name?: string; namespace?: string } = {}) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: options.namespace ?? 'shop',
      operation: 'CREATE',
      object: { metadata: { name: options.name ?? uid }, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } },
    },
  }
}
