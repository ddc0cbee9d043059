// The chart's RBAC for pre-warm: list the workload kinds, the Lease by name, the credentials Secrets by name.
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

type Manifest = { kind: string; metadata: { name: string; namespace?: string }; rules?: unknown[] }

async function render(config: Record<string, unknown>): Promise<Manifest[]> {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-chart-prewarm-'))
  try {
    await writeFile(join(dir, 'values.yaml'), JSON.stringify({ config }))
    const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = spawn(HELM, ['template', 'mirrorhook', CHART, '--namespace', 'mirrorhook', '-f', join(dir, 'values.yaml')], {
        env: { ...process.env, HELM_CACHE_HOME: join(dir, 'cache'), HELM_CONFIG_HOME: join(dir, 'config') },
      })
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d) => (stdout += d))
      child.stderr.on('data', (d) => (stderr += d))
      child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))
    })
    if (r.code !== 0) throw new Error(`helm template failed: ${r.stderr}`)
    return parseAllDocuments(r.stdout)
      .map((d) => d.toJS() as Manifest | null)
      .filter((d): d is Manifest => d !== null)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const named = (ms: Manifest[], kind: string, name: string) => ms.find((m) => m.kind === kind && m.metadata.name === name)

if (!existsSync(HELM)) {
  const message = `helm not found at ${HELM}: run npm run k8s:build`
  if (isCI()) t.fail(message)
  else t.plan(0, message)
} else {
  t.test('pre-warm off (the default): no pre-warm Role, no workload reads', async (t) => {
    const ms = await render({})
    t.equal(named(ms, 'Role', 'mirrorhook-prewarm'), undefined)
    t.strictSame(
      named(ms, 'ClusterRole', 'mirrorhook')?.rules,
      [
        {
          apiGroups: ['admissionregistration.k8s.io'],
          resources: ['mutatingwebhookconfigurations'],
          resourceNames: ['mirrorhook'],
          verbs: ['get', 'patch'],
        },
        { apiGroups: [''], resources: ['pods'], verbs: ['list', 'watch'] },
        { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch'] },
        { apiGroups: [''], resources: ['namespaces', 'events'], verbs: ['list', 'watch'] },
        { apiGroups: [''], resources: ['pods/eviction'], verbs: ['create'] },
        { apiGroups: [''], resources: ['events'], verbs: ['create'] },
      ],
      'no deployments, statefulsets, daemonsets or cronjobs',
    )
  })

  // The first rule is the webhook configuration's caBundle (self-managed TLS, the chart's default).
  t.test('pre-warm on, alone: the workload kinds, namespaces for the selector, its Lease and Secret by name', async (t) => {
    const ms = await render({
      kubeFledged: { enabled: false },
      reachability: { enabled: false },
      remediation: { enabled: false },
      prewarm: {
        enabled: true,
        namespaceSelector: { matchLabels: { team: 'web' } },
        lease: 'warm',
        registries: {
          'harbor.corp.example': { api: 'harbor', order: 'push-time', credentialsSecret: 'harbor-robot' },
          'registry.corp.example:5000': { api: 'oci', order: 'semver', credentialsSecret: 'harbor-robot' },
          'open.corp.example': { api: 'oci', order: 'semver' },
        },
      },
    })
    t.strictSame(named(ms, 'ClusterRole', 'mirrorhook')?.rules?.slice(1), [
      { apiGroups: ['apps'], resources: ['deployments', 'statefulsets', 'daemonsets'], verbs: ['list'] },
      { apiGroups: ['batch'], resources: ['cronjobs'], verbs: ['list'] },
      { apiGroups: [''], resources: ['namespaces'], verbs: ['list'] },
    ])
    t.strictSame(named(ms, 'Role', 'mirrorhook-prewarm')?.rules, [
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], resourceNames: ['warm'], verbs: ['get', 'update'] },
      { apiGroups: [''], resources: ['secrets'], resourceNames: ['harbor-robot'], verbs: ['get'] },
    ])
    const subjects = [{ kind: 'ServiceAccount', name: 'mirrorhook', namespace: 'mirrorhook' }]
    const roleBinding = named(ms, 'RoleBinding', 'mirrorhook-prewarm') as unknown as Record<string, unknown> | undefined
    t.strictSame(
      {
        namespace: (roleBinding?.metadata as { namespace?: string })?.namespace,
        roleRef: roleBinding?.roleRef,
        subjects: roleBinding?.subjects,
      },
      { namespace: 'mirrorhook', roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'mirrorhook-prewarm' }, subjects },
    )
    const clusterBinding = named(ms, 'ClusterRoleBinding', 'mirrorhook') as unknown as Record<string, unknown> | undefined
    t.strictSame(
      { roleRef: clusterBinding?.roleRef, subjects: clusterBinding?.subjects },
      { roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'mirrorhook' }, subjects },
    )
  })
}
