// Small helpers shared by the tests: the CLI as a child process, polling, AdmissionReviews, captured
// log lines and metric values of an in-process server.
import { spawn } from 'node:child_process'
import { readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { pino, type Logger } from 'pino'
import type { RunningServer } from '../../server/serve.js'

const SOURCES = new URL('../../server/', import.meta.url).pathname
const BUILT = new URL('../../dist/server/', import.meta.url).pathname
let command: string[] | undefined

/** Whether dist/server holds a build of every file in server/ as it is now. */
function builtFromSources(dir = SOURCES): boolean {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const file = join(dir, entry.name)
    if (entry.isDirectory()) {
      if (!builtFromSources(file)) return false
    } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) {
      const built = join(BUILT, relative(SOURCES, file)).replace(/\.ts$/, '.js')
      try {
        if (statSync(built).mtimeMs < statSync(file).mtimeMs) return false
      } catch {
        return false
      }
    }
  }
  return true
}

/**
 * The command (after `node`) that starts `mirrorhook`: the built CLI, which the package's `bin`
 * runs, when `npm run build` (npm test's pretest) made it from the sources as they are now;
 * otherwise the sources through tsx. The built CLI starts in half the CPU time.
 */
export function cliCommand(): string[] {
  command ??= builtFromSources() ? [join(BUILT, 'cli.js')] : ['--import', 'tsx', join(SOURCES, 'cli.ts')]
  return command
}

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
    const child = spawn(process.execPath, [...cliCommand(), ...args], {
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

/**
 * Polls `check` until it returns a truthy value, or fails naming `what` and the last error it
 * threw (errors count as "not yet": the object may not exist yet).
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 30_000,
): Promise<T> {
  const deadline = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await check()
      if (v) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms${last ? ` (${String(last)})` : ''}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** An admission.k8s.io/v1 review of a Pod CREATE with one container per image. */
export function podReview(uid: string, images: readonly string[], options: { name?: string; namespace?: string } = {}) {
  const object = { metadata: { name: options.name ?? uid }, spec: { containers: images.map((image, i) => ({ name: `c${i}`, image })) } }
  return podCreateReview(uid, object, { namespace: options.namespace ?? 'shop' })
}

/** The AdmissionReview of a CREATE of `object`, a Pod in namespace shop; `request` adds or replaces request fields. */
export function podCreateReview(uid: string, object: unknown, request: Record<string, unknown> = {}) {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      namespace: 'shop',
      operation: 'CREATE',
      object,
      ...request,
    },
  }
}

export type LogLine = Record<string, unknown> & { msg?: string }

/** A logger whose JSON lines are kept in memory, parsed. */
export function capturingLogger(level: 'debug' | 'info' = 'debug'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = []
  const logger = pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) })
  return { logger, lines }
}

/** The sum of a metric's values whose labels include `labels` (0 when the metric is not registered). */
export async function metric(server: RunningServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = server.metrics.registry.getSingleMetric(name)
  if (!m) return 0
  return (await m.get()).values
    .filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val))
    .reduce((n, v) => n + v.value, 0)
}
