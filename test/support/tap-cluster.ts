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
 * Starts what a test file needs, or decides the file can't run here: skipped (t.plan(0, reason))
 * or failed (CI=true) when the binaries are missing, in which case it returns null; stopped in
 * t.teardown, logs kept when a test failed (or MIRRORHOOK_KEEP_LOGS is set). Throws (failing the
 * file) when the binaries are there but it does not come up.
 */
async function startForFile<T extends { stop(o: { keepLogs: boolean; reason: string }): Promise<unknown> }>(
  t: Test,
  bins: { ok: boolean; message?: string },
  start: () => Promise<T>,
): Promise<T | null> {
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
  const started = await start()
  t.teardown(async () => {
    const failed = !t.passing()
    const keep = failed || /^(1|true|yes)$/i.test(process.env.MIRRORHOOK_KEEP_LOGS ?? '')
    await started.stop({ keepLogs: keep, reason: failed ? `${testFileName(t)}: a test failed` : 'MIRRORHOOK_KEEP_LOGS' })
  })
  return started
}

/** A control plane (etcd + kube-apiserver) for this test file; guard the file's tests with `if (cp)`. */
export function withControlPlane(t: Test, opts: StartOptions = {}): Promise<ControlPlane | null> {
  return startForFile(t, checkBinaries(opts.binDir), () => startControlPlane(opts))
}

/** A whole test cluster (test/support/cluster.ts) for this test file, under the same rules. */
export function withCluster(t: Test, opts: ClusterOptions = {}): Promise<Cluster | null> {
  return startForFile(t, checkClusterBinaries(opts.binDir), () => startCluster(opts))
}
