// `mirrorhook dry-run` and `rewrite` say what the pull rules decided, and why.
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli } from '../support/helpers.js'

const CONFIG = `mirror:
  prefix: m.daocloud.io
  hosts: { quay.io: harbor.corp.example/quay }
  pullSecrets: { harbor.corp.example: harbor-pull }
pull: { mutableTags: keep }
`
const POD = `apiVersion: v1
kind: Pod
metadata: { name: p, namespace: shop }
spec:
  imagePullSecrets: [{ name: mine }]
  containers:
    - { name: a, image: nginx:1.25, imagePullPolicy: Never }
    - { name: b, image: nginx:1.25 }
    - { name: c, image: quay.io/org/x:1 }
`

t.test('dry-run and rewrite show each pull rule with its reason', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-cli-pull-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const config = join(dir, 'config.yaml')
  await writeFile(config, CONFIG)
  const env = { HOME: process.env.HOME ?? '' }

  const dry = await runCli(['dry-run', '-f', '-', '-c', config], { stdin: POD, env })
  t.equal(dry.code, 0, dry.stderr)
  t.equal(
    dry.stderr,
    [
      'Pod/p containers[a]: nginx:1.25 kept: imagePullPolicy is Never: the node must already have the image under this name',
      'Pod/p containers[b]: nginx:1.25 kept: the Pod has imagePullSecrets and mirror m.daocloud.io has no pull Secret of its own (pull.privateImages is keep)',
      'Pod/p containers[c]: quay.io/org/x:1 -> harbor.corp.example/quay/org/x:1 (mode always; pull Secret harbor-pull)',
      "Pod/p: imagePullSecrets += harbor-pull (the mirror's pull Secret)",
      '',
    ].join('\n'),
  )
  t.equal(
    dry.stdout,
    [
      'apiVersion: v1',
      'kind: Pod',
      'metadata:',
      '  {',
      '    name: p,',
      '    namespace: shop,',
      `    annotations: { mirrorhook.io/original-images: '{"c":"quay.io/org/x:1"}' }`,
      '  }',
      'spec:',
      '  imagePullSecrets: [ { name: mine }, { name: harbor-pull } ]',
      '  containers:',
      '    - { name: a, image: nginx:1.25, imagePullPolicy: Never }',
      '    - { name: b, image: nginx:1.25 }',
      '    - { name: c, image: harbor.corp.example/quay/org/x:1 }',
      '',
    ].join('\n'),
  )

  const rewrite = await runCli(['rewrite', '-c', config, 'nginx', 'nginx:1.25', 'quay.io/a/b:1'], { env })
  t.equal(
    rewrite.stdout,
    [
      'nginx kept: the tag may move and pull.mutableTags is keep (a mirror may serve its old manifest for up to its cache time)',
      'nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (mode always)',
      'quay.io/a/b:1 -> harbor.corp.example/quay/a/b:1 (mode always; pull Secret harbor-pull)',
      '',
    ].join('\n'),
  )
  const never = await runCli(['rewrite', '-c', config, '--pull-policy', 'Never', 'nginx:1.25'], { env })
  t.equal(never.stdout, 'nginx:1.25 kept: imagePullPolicy is Never: the node must already have the image under this name\n')
  const priv = await runCli(['rewrite', '-c', config, '--pod-pull-secrets', 'nginx:1.25', 'quay.io/a/b:1'], { env })
  t.equal(
    priv.stdout,
    [
      'nginx:1.25 kept: the Pod has imagePullSecrets and mirror m.daocloud.io has no pull Secret of its own (pull.privateImages is keep)',
      'quay.io/a/b:1 -> harbor.corp.example/quay/a/b:1 (mode always; pull Secret harbor-pull)',
      '',
    ].join('\n'),
  )
  const bad = await runCli(['rewrite', '-c', config, '--pull-policy', 'Sometimes', 'nginx:1.25'], { env })
  t.equal(bad.code, 1)
  // The first line is the answer; the usage text that follows is commander's.
  t.equal(
    bad.stderr.split('\n')[0],
    "error: option '--pull-policy <policy>' argument 'Sometimes' is invalid. Allowed choices are Always, IfNotPresent, Never.",
  )
  t.equal(bad.stdout, '')
})
