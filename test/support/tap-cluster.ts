// tap glue for the end-to-end tests: one control plane per test file.
//
//   import t from 'tap';
//   import { withControlPlane } from '../support/tap-cluster.js';
//
//   const cp = await withControlPlane(t);
//   if (cp) {
//     t.test('something against the real apiserver', async (t) => {
//       const r = await cp.kubectl(['get', 'ns', 'default', '-o', 'name']);
//       t.equal(r.code, 0, r.stderr);
//     });
//   }
//
// When the binaries are missing (no `npm run k8s:build`, e.g. no Go on the machine):
//   - normally the whole file is skipped, with a message saying so and what to run;
//   - with CI=true that is a test failure, never a silent skip.
// The control plane is stopped in t.teardown; its logs are removed when the file passed
// and kept (path printed) when anything in it failed. Set MIRRORHOOK_KEEP_LOGS=1 to keep them always.
import path from 'node:path'
import type { Test } from 'tap'
import { checkBinaries, startControlPlane, type ControlPlane, type StartOptions } from './controlplane.js'
import { checkClusterBinaries, startCluster, type Cluster, type ClusterOptions } from './cluster.js'

function testFileName(t: Test): string {
  const file = process.argv[1]
  return t.name !== 'TAP' || !file ? t.name : path.relative(process.cwd(), file)
}

export function isCI(): boolean {
  return /^(1|true|yes)$/i.test(process.env.CI ?? '')
}

/**
 * Starts a control plane for this test file, or decides the file can't run here.
 * Returns null when the file was skipped (t.plan(0, reason)) or failed (CI=true, binaries missing);
 * guard the file's tests with `if (cp)`.
 * Throws (failing the file) when the binaries are there but the control plane does not come up.
 */
export async function withControlPlane(t: Test, opts: StartOptions = {}): Promise<ControlPlane | null> {
  const bins = checkBinaries(opts.binDir)
  if (!bins.ok) {
    if (isCI()) {
      t.fail(`end-to-end tests cannot run, and with CI=true that is a failure, not a skip: ${bins.message}`)
    } else {
      const msg = `end-to-end tests skipped: ${bins.message}`
      process.stderr.write(`# ${msg}\n`)
      t.plan(0, msg)
    }
    return null
  }
  const cp = await startControlPlane(opts)
  t.teardown(async () => {
    const failed = !t.passing()
    const keep = failed || /^(1|true|yes)$/i.test(process.env.MIRRORHOOK_KEEP_LOGS ?? '')
    await cp.stop({ keepLogs: keep, reason: failed ? `${testFileName(t)}: a test failed` : 'MIRRORHOOK_KEEP_LOGS' })
  })
  return cp
}

/**
 * Starts a whole test cluster (test/support/cluster.ts) for this test file, with the same rules
 * as withControlPlane: skipped (or, with CI=true, failed) when the binaries are missing;
 * stopped in t.teardown, logs kept when something failed.
 */
export async function withCluster(t: Test, opts: ClusterOptions = {}): Promise<Cluster | null> {
  const bins = checkClusterBinaries(opts.binDir)
  if (!bins.ok) {
    if (isCI()) {
      t.fail(`end-to-end tests cannot run, and with CI=true that is a failure, not a skip: ${bins.message}`)
    } else {
      const msg = `end-to-end tests skipped: ${bins.message}`
      process.stderr.write(`# ${msg}\n`)
      t.plan(0, msg)
    }
    return null
  }
  const cluster = await startCluster(opts)
  t.teardown(async () => {
    const failed = !t.passing()
    const keep = failed || /^(1|true|yes)$/i.test(process.env.MIRRORHOOK_KEEP_LOGS ?? '')
    await cluster.stop({ keepLogs: keep, reason: failed ? `${testFileName(t)}: a test failed` : 'MIRRORHOOK_KEEP_LOGS' })
  })
  return cluster
}
