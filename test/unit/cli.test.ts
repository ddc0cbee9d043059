// The command line as an operator runs it: a child process, stdout, stderr and exit codes.
import t from 'tap'
import { mkdtemp, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { runCli } from '../support/helpers.js'

function run(args: string[], stdin?: string, env: Record<string, string> = {}) {
  return runCli(args, { stdin, env: { HOME: process.env.HOME ?? '', ...env } })
}

// What dry-run prints for test/fixtures/workloads.yaml with noProxy [".corp.example"].
const DRY_RUN_FIXTURE_OUT = `# A Deployment and a Pod, as an operator would write them.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: { app: web }
  template:
    metadata:
      labels: { app: web }
      annotations:
        mirrorhook.io/original-images: '{"migrate":"ghcr.io/example/migrate:v3","web":"nginx:1.25"}'
    spec:
      initContainers:
        - name: migrate
          image: m.daocloud.io/ghcr.io/example/migrate:v3 # runs first
      containers:
        - name: web
          image: m.daocloud.io/docker.io/library/nginx:1.25
        - name: sidecar
          image: registry.corp.example/tools/sidecar:2
---
apiVersion: v1
kind: Pod
metadata:
  name: debug
  namespace: shop
  annotations:
    team: payments
    mirrorhook.io/original-images: '{"shell":"busybox@sha256:8f5b6f2f9a2bb6b0a4c1c8d1b1e3b1e3f1e1d1c1b1a19181716151413121110f"}'
spec:
  containers:
    - name: shell
      image: m.daocloud.io/docker.io/library/busybox@sha256:8f5b6f2f9a2bb6b0a4c1c8d1b1e3b1e3f1e1d1c1b1a19181716151413121110f
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  key: value
`
const DRY_RUN_FIXTURE_ERR = `Deployment/web initContainers[migrate]: ghcr.io/example/migrate:v3 -> m.daocloud.io/ghcr.io/example/migrate:v3 (mode always)
Deployment/web containers[web]: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)
Deployment/web containers[sidecar]: registry.corp.example/tools/sidecar:2 kept: registry registry.corp.example matches noProxy entry ".corp.example"
Pod/debug containers[shell]: busybox@sha256:8f5b6f2f9a2bb6b0a4c1c8d1b1e3b1e3f1e1d1c1b1a19181716151413121110f -> m.daocloud.io/docker.io/library/busybox@sha256:8f5b6f2f9a2bb6b0a4c1c8d1b1e3b1e3f1e1d1c1b1a19181716151413121110f (mode always)
ConfigMap/settings: no Pod spec, left as is
`
// What dry-run prints for the Pod and List sharing YAML anchors below.
const ANCHORS_OUT = `apiVersion: v1
kind: Pod
metadata:
  {
    name: anchored,
    annotations: { mirrorhook.io/original-images: '{"web":"nginx:1.25","copy":"nginx:1.25"}' }
  }
spec:
  containers:
    - name: web
      image: m.daocloud.io/docker.io/library/nginx:1.25 # pinned
      env:
        - {
            name: UPSTREAM_IMAGE,
            value: nginx:1.25 # pinned
          }
    - name: copy
      image: m.daocloud.io/docker.io/library/nginx:1.25 # pinned
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: { name: first }
    spec:
      template:
        spec:
          containers:
            - { name: app, image: m.daocloud.io/ghcr.io/org/app:1 }
        metadata:
          annotations:
            mirrorhook.io/original-images: '{"app":"ghcr.io/org/app:1"}'
  - apiVersion: apps/v1
    kind: Deployment
    metadata: { name: second, labels: { mirrorhook.io/skip: "true" } }
    spec:
      template:
        metadata: { labels: { mirrorhook.io/skip: "true" } }
        spec:
          containers:
            - { name: app, image: ghcr.io/org/app:1 }
`

t.test('rewrite prints one line per image', async (t) => {
  const r = await run(['rewrite', 'nginx:1.25', 'registry.corp.example/app:1', 'Bad:Ref'])
  t.equal(r.code, 0)
  t.strictSame(r.stdout.trim().split('\n'), [
    'nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (registry docker.io is unknown (no learned state consulted; --url or --from-cluster use what the server knows); reachability.unknown is mirror)',
    'registry.corp.example/app:1 kept: registry registry.corp.example is not in the configured registries',
    'Bad:Ref kept: invalid image reference: invalid reference format: repository name (library/Bad) must be lowercase',
  ])
})

t.test('the seed environment variables work unchanged', async (t) => {
  const r = await run(['rewrite', 'registry.corp.example/app:1', 'harbor.internal/x:1'], undefined, {
    DOCKER_PROXY_URL: 'mirror.example',
    NO_PROXY_DOCKER_DOMAIN: 'harbor.internal',
  })
  t.equal(r.code, 0)
  t.strictSame(r.stdout.trim().split('\n'), [
    'registry.corp.example/app:1 -> mirror.example/registry.corp.example/app:1 (mode always)',
    'harbor.internal/x:1 kept: registry harbor.internal matches noProxy entry "harbor.internal"',
  ])
})

t.test('dry-run mutates Pods and templates, keeps other documents and comments, explains on stderr', async (t) => {
  const fixture = new URL('../fixtures/workloads.yaml', import.meta.url).pathname
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-cli-'))
  const config = join(dir, 'config.yaml')
  await writeFile(config, 'noProxy: [".corp.example"]\n')
  const r = await run(['dry-run', '-f', fixture, '--config', config])
  t.equal(r.code, 0, r.stderr)
  const docs = parseAllDocuments(r.stdout) as ReturnType<typeof parseAllDocuments> & unknown[]
  const [deploy, pod, cm] = (docs as { toJS(): any }[]).map((d) => d.toJS())
  t.equal(deploy.spec.template.spec.initContainers[0].image, 'm.daocloud.io/ghcr.io/example/migrate:v3')
  t.equal(deploy.spec.template.spec.containers[0].image, 'm.daocloud.io/docker.io/library/nginx:1.25')
  t.equal(deploy.spec.template.spec.containers[1].image, 'registry.corp.example/tools/sidecar:2', 'noProxy respected')
  t.strictSame(JSON.parse(deploy.spec.template.metadata.annotations['mirrorhook.io/original-images']), {
    migrate: 'ghcr.io/example/migrate:v3',
    web: 'nginx:1.25',
  })
  t.equal(
    pod.spec.containers[0].image,
    'm.daocloud.io/docker.io/library/busybox@sha256:8f5b6f2f9a2bb6b0a4c1c8d1b1e3b1e3f1e1d1c1b1a19181716151413121110f',
  )
  t.equal(pod.metadata.annotations.team, 'payments', 'existing annotations kept')
  t.strictSame(cm, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'settings' }, data: { key: 'value' } })
  t.equal(r.stdout, DRY_RUN_FIXTURE_OUT, 'comments survive')
  t.equal(r.stderr, DRY_RUN_FIXTURE_ERR)
})

t.test('dry-run reads stdin, and handles CronJobs and skip labels', async (t) => {
  const input = `apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: job, image: "registry.k8s.io/kubectl:v1.35.0"}]
---
apiVersion: v1
kind: Pod
metadata: {name: skipped, labels: {mirrorhook.io/skip: "true"}}
spec:
  containers: [{name: c, image: nginx}]
`
  const r = await run(['dry-run', '-f', '-'], input)
  t.equal(r.code, 0, r.stderr)
  const [cron, pod] = (parseAllDocuments(r.stdout) as unknown as { toJS(): any }[]).map((d) => d.toJS())
  t.equal(cron.spec.jobTemplate.spec.template.spec.containers[0].image, 'm.daocloud.io/registry.k8s.io/kubectl:v1.35.0')
  t.equal(pod.spec.containers[0].image, 'nginx')
  t.equal(
    r.stderr,
    `CronJob/nightly containers[job]: registry.k8s.io/kubectl:v1.35.0 -> m.daocloud.io/registry.k8s.io/kubectl:v1.35.0 (registry registry.k8s.io is unknown (not listed in config unreachable); reachability.unknown is mirror)
Pod/skipped: skipped: the Pod is labelled mirrorhook.io/skip=true
`,
  )
})

t.test('clear errors and a non-zero exit', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-cli-'))
  const missing = await run(['dry-run', '-f', join(dir, 'nope.yaml')])
  t.equal(missing.code, 1)
  t.equal(missing.stderr, `mirrorhook: cannot read ${join(dir, 'nope.yaml')}: ENOENT\n`)

  const badYaml = join(dir, 'bad.yaml')
  await writeFile(badYaml, 'kind: Pod\nspec: [unclosed\n')
  const yamlRun = await run(['dry-run', '-f', badYaml])
  t.equal(yamlRun.code, 1)
  t.equal(
    yamlRun.stderr,
    `mirrorhook: ${badYaml}: document 1 is not valid YAML: ` +
      'Flow sequence in block collection must be sufficiently indented and end with a ] (line 3, column 1)\n',
  )

  const badConfig = join(dir, 'config.yaml')
  await writeFile(badConfig, 'mode: sometimes\nmirorr: {}\n')
  const configRun = await run(['rewrite', 'nginx', '--config', badConfig])
  t.equal(configRun.code, 1)
  t.equal(
    configRun.stderr,
    `mirrorhook: invalid configuration in ${badConfig}:\n` +
      '  - mode: Invalid option: expected one of "always"|"unreachable"|"auto"\n' +
      '  - mirorr: unknown key\n',
  )

  const unknownCommand = await run(['frobnicate'])
  t.equal(unknownCommand.code, 1)
  t.equal(unknownCommand.stderr.split('\n')[0], "error: unknown command 'frobnicate'")
})

t.test('dry-run changes the image, not what an alias of it stands for elsewhere', async (t) => {
  const input = `apiVersion: v1
kind: Pod
metadata: {name: anchored}
spec:
  containers:
    - name: web
      image: &img nginx:1.25 # pinned
      env:
        - {name: UPSTREAM_IMAGE, value: *img}
    - name: copy
      image: *img
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: first}
    spec:
      template:
        spec:
          containers: &shared
            - {name: app, image: ghcr.io/org/app:1}
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: second, labels: {mirrorhook.io/skip: "true"}}
    spec:
      template:
        metadata: {labels: {mirrorhook.io/skip: "true"}}
        spec:
          containers: *shared
`
  const r = await run(['dry-run', '-f', '-'], input)
  t.equal(r.code, 0, r.stderr)
  const [pod, list] = (parseAllDocuments(r.stdout) as unknown as { toJS(): any; errors: unknown[] }[]).map((d) => {
    t.strictSame(d.errors, [], 'the output is valid YAML')
    return d.toJS()
  })
  t.strictSame(
    pod.spec.containers.map((c: { image: string }) => c.image),
    ['m.daocloud.io/docker.io/library/nginx:1.25', 'm.daocloud.io/docker.io/library/nginx:1.25'],
  )
  t.equal(pod.spec.containers[0].env[0].value, 'nginx:1.25', 'the alias in env keeps the original value')
  t.strictSame(JSON.parse(pod.metadata.annotations['mirrorhook.io/original-images']), { web: 'nginx:1.25', copy: 'nginx:1.25' })
  t.equal(r.stdout, ANCHORS_OUT, 'the comment on the image stays')
  t.equal(list.items[0].spec.template.spec.containers[0].image, 'm.daocloud.io/ghcr.io/org/app:1')
  t.equal(list.items[1].spec.template.spec.containers[0].image, 'ghcr.io/org/app:1', 'the skipped Deployment sharing the list is unchanged')
})

t.test('dry-run refuses input over its size limit at once, with a clear message', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-cli-'))
  const huge = join(dir, 'huge.yaml')
  await writeFile(huge, '')
  await truncate(huge, 16 * 1024 * 1024 + 1)
  const file = await run(['dry-run', '-f', huge])
  t.equal(file.code, 1)
  t.equal(file.stdout, '')
  t.equal(file.stderr, `mirrorhook: ${huge} is larger than 16 MiB: split it, e.g. one file per application\n`)

  const piped = await run(['dry-run', '-f', '-'], `kind: ConfigMap\n# ${'x'.repeat(16 * 1024 * 1024)}\n`)
  t.equal(piped.code, 1)
  t.equal(piped.stdout, '')
  t.equal(piped.stderr, 'mirrorhook: standard input is larger than 16 MiB: split it, e.g. one file per application\n')
})
