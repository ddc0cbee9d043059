// Mutation testing of the pure decision code (test/MUTATION.md). `npm run test:mutation` runs
// one group after the other; each group's mutants are tested only by that group's own unit
// tests, listed so that the module's table tests run first (a mutant runs the files that reach
// it, in this order, until one fails). STRYKER_GROUP=<name> npx stryker run runs one group.
const groups = {
  prepull: {
    mutate: ['server/prepull/reconciler.ts', 'server/prepull/queue.ts'],
    // The edge tables first: each runs in about a second, prepull-reconcile in about twenty.
    testFiles: [
      'test/unit/prepull-queue-edges.test.ts',
      'test/unit/prepull-reconcile-edges.test.ts',
      'test/unit/prepull-queue.test.ts',
      'test/unit/prepull-reconcile.test.ts',
    ],
  },
  reachability: {
    mutate: ['server/reachability/state.ts', 'server/reachability/classify.ts'],
    testFiles: [
      'test/unit/reachability-classify.test.ts',
      'test/unit/reachability-state.test.ts',
      'test/unit/reachability-state-edges.test.ts',
      'test/unit/reachability-classify-edges.test.ts',
      'test/unit/reachability-state-late.test.ts',
    ],
  },
  admission: {
    // The Pod-level rules: the plan and patch (pod.ts), the per-container pull rules (pullrules.ts).
    mutate: ['server/admission/**/*.ts', 'server/core/pod.ts', 'server/core/pullrules.ts', 'server/core/manifests.ts'],
    testFiles: [
      'test/unit/review-text.test.ts',
      'test/unit/pod.test.ts',
      'test/unit/pullrules.test.ts',
      'test/unit/manifests.test.ts',
      'test/unit/admission.test.ts',
      'test/unit/pullrules-edges.test.ts',
      'test/unit/admission-edges.test.ts',
      'test/unit/pod-edges.test.ts',
    ],
  },
  core: {
    // The rest of server/core: the reference grammar, noProxy, the policy, the rewrite decision
    // (including mode auto's use of registry state, several mirrors per registry and their
    // allowlists) and the configuration. The edge tables run first here: they target the
    // mutants the module tables leave, so a re-run of those mutants stops at the first file.
    mutate: ['server/core/**/*.ts', '!server/core/pod.ts', '!server/core/pullrules.ts', '!server/core/manifests.ts'],
    testFiles: [
      'test/unit/json-scan.test.ts',
      'test/unit/rewrite-decision-edges.test.ts',
      'test/unit/noproxy-edges.test.ts',
      'test/unit/reference-edges.test.ts',
      'test/unit/config-edges.test.ts',
      'test/unit/policy-compile-edges.test.ts',
      'test/unit/rewrite-edges.test.ts',
      'test/unit/policy-edges.test.ts',
      'test/unit/allowlist-edges.test.ts',
      'test/unit/reference/regexp.test.ts',
      'test/unit/reference/reference.test.ts',
      'test/unit/reference/normalize.test.ts',
      'test/unit/noproxy.test.ts',
      'test/unit/rewrite.test.ts',
      'test/unit/reachability-decision.test.ts',
      'test/unit/allowlist.test.ts',
      'test/unit/mirrors-decision.test.ts',
      'test/unit/config.test.ts',
    ],
  },
}

const name = process.env.STRYKER_GROUP ?? ''
const group = groups[name]
if (!group) throw new Error(`STRYKER_GROUP must be one of ${Object.keys(groups).join(', ')} (npm run test:mutation runs them all)`)

export default {
  testRunner: 'tap',
  tap: {
    testFiles: group.testFiles,
    nodeArgs: ['-r', '{{hookFile}}', '--import', 'tsx', '--import', './test/support/offline-guard.mjs', '{{testFile}}'],
  },
  mutate: group.mutate,
  ignorePatterns: [
    '.tap',
    '.cluster',
    '.dev-certs',
    'dist',
    'reports',
    'coverage',
    'test/k8s',
    'test/bench',
    'test/e2e',
    'charts',
    'certs',
  ],
  coverageAnalysis: 'perTest',
  // Mutants reached only while modules load (module-level constants and regular expressions)
  // would need every test file for each; they are reported as ignored, not counted as killed.
  ignoreStatic: true,
  // A shared 2-core machine.
  concurrency: 2,
  incremental: true,
  incrementalFile: `test/mutation/${name}.incremental.json`,
  thresholds: { high: 90, low: 85, break: 85 },
  reporters: ['clear-text', 'progress', 'json'],
  jsonReporter: { fileName: `reports/mutation/${name}.json` },
  clearTextReporter: { allowColor: false, logTests: false },
  // A shared, loaded 2-core machine: a slow test run must not count as a killed mutant.
  timeoutMS: 60000,
  timeoutFactor: 3,
  tempDirName: `.stryker-tmp/${name}`,
  cleanTempDir: 'always',
}
