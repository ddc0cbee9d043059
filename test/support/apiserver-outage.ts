// Stops the test control plane's kube-apiserver (etcd keeps running) and starts it
// again with the same command line, port and certificates: an API server outage.
import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { type ControlPlane, groupAlive } from './controlplane.js'

const restarted = new Set<number>()
let hooked = false

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal)
  } catch {
    // already gone
  }
}

async function until(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try {
      if (await check()) return
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`${what}: not within ${ms} ms`)
}

export interface Outage {
  /** Starts kube-apiserver again and waits for /readyz. */
  restore(): Promise<void>
}

/**
 * Kills kube-apiserver. The restarted process is this module's to stop: it is killed at
 * `cleanup()` and when this process exits (the control plane's own stop() only knows the first one).
 */
export async function stopApiserver(cp: ControlPlane): Promise<Outage> {
  const pid = cp.pids.apiserver
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean)
  if (argv.length === 0) throw new Error(`cannot read the command line of kube-apiserver (pid ${pid})`)
  killGroup(pid, 'SIGKILL')
  await until('kube-apiserver stopped', 10_000, () => !groupAlive(pid))
  return {
    async restore() {
      const log = openSync(join(cp.logsDir, 'kube-apiserver.log'), 'a')
      const env = { ...process.env }
      for (const k of Object.keys(env)) if (/^(https?|all)_proxy$/i.test(k)) delete env[k]
      env.NO_PROXY = env.no_proxy = '127.0.0.1,localhost,::1'
      const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: ['ignore', log, log], env })
      closeSync(log)
      if (!child.pid) throw new Error('kube-apiserver did not start')
      restarted.add(child.pid)
      cp.pids.apiserver = child.pid
      if (!hooked) {
        hooked = true
        process.on('exit', () => {
          for (const g of restarted) killGroup(g, 'SIGKILL')
        })
      }
      await until('kube-apiserver ready again', 90_000, async () => (await cp.request('GET', '/readyz')).status === 200)
    },
  }
}

/** Stops the kube-apiservers this module started. */
export async function cleanupRestartedApiservers(): Promise<void> {
  for (const g of restarted) killGroup(g, 'SIGTERM')
  await until('restarted kube-apiservers stopped', 15_000, () => [...restarted].every((g) => !groupAlive(g))).catch(() => {
    for (const g of restarted) killGroup(g, 'SIGKILL')
  })
  restarted.clear()
}
