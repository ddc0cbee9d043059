// The allowlist parser and matcher against a real copy of DaoCloud's published list.
// test/fixtures/daocloud-allows.txt is allows.txt from github.com/DaoCloud/public-image-mirror
// (commit 545841ff9551ffff996ef354c190dca3922c32ad, 737 lines), unchanged: the format has no
// comments (crproxy reads every non-blank line as a pattern and requires the lines sorted).
// The expected answers follow crproxy's matcher (wzshiming/hostmatcher pathmatcher.go):
// `*` is one segment, `**` at the end one or more segments, anything else is exact.
import { readFileSync } from 'node:fs'
import t from 'tap'
import { parseAllowlist } from '../../server/core/allowlist.js'

const FIXTURE = new URL('../fixtures/daocloud-allows.txt', import.meta.url)
const text = readFileSync(FIXTURE, 'utf8')

t.test('the published list compiles whole: every line is a pattern', async (t) => {
  const { list, ignored } = parseAllowlist(text)
  t.equal(list.patterns, 737)
  t.strictSame(ignored, [])
  const lines = text.trimEnd().split('\n')
  t.equal(lines.length, 737)
  t.strictSame([...lines].sort(), lines, 'sorted, as crproxy requires')
})

t.test('the pattern forms of the published list', async (t) => {
  const { list } = parseAllowlist(text)
  // [repository, allowed, the line that decides]
  const cases: [string, boolean, string][] = [
    // `registry/**`: anything below the registry, any depth.
    ['gcr.io/distroless/static', true, 'gcr.io/**'],
    ['registry.k8s.io/pause', true, 'registry.k8s.io/**'],
    ['registry.k8s.io/sig-storage/csi-provisioner', true, 'registry.k8s.io/**'],
    ['k8s.gcr.io/a/b/c/d', true, 'k8s.gcr.io/**'],
    ['mcr.microsoft.com/dotnet/runtime', true, 'mcr.microsoft.com/**'],
    ['nvcr.io/nvidia/cuda', true, 'nvcr.io/**'],
    ['docker.elastic.co/elasticsearch/elasticsearch', true, 'docker.elastic.co/**'],
    // `registry/org/**`: the organisation at any depth, not the organisation itself.
    ['ghcr.io/open-telemetry/opentelemetry-collector-releases/opentelemetry-collector-contrib', true, 'ghcr.io/open-telemetry/**'],
    ['ghcr.io/helm/chartmuseum', true, 'ghcr.io/helm/**'],
    ['ghcr.io/helm', false, 'ghcr.io/helm/** needs a segment below'],
    ['registry.gitlab.com/gitlab-org/gitlab-runner/gitlab-runner-helper', true, 'registry.gitlab.com/gitlab-org/**'],
    ['registry.gitlab.com/other/app', false, 'only gitlab-org'],
    ['docker.io/sameersbn/redis', true, 'docker.io/sameersbn/**'],
    // `registry/org/*`: exactly one segment below.
    ['docker.io/bitnami/postgresql', true, 'docker.io/bitnami/*'],
    ['docker.io/bitnami/charts/postgresql', false, 'docker.io/bitnami/* is one segment'],
    ['quay.io/prometheus/node-exporter', true, 'quay.io/prometheus/*'],
    ['quay.io/prometheus', false, 'quay.io/prometheus/* needs a segment'],
    ['ghcr.io/brenner-tobias/cloudflared/addon-cloudflared', true, 'ghcr.io/brenner-tobias/cloudflared/*'],
    ['ghcr.io/fluent/fluent-operator/fluent-bit', true, 'ghcr.io/fluent/fluent-operator/*'],
    ['ghcr.io/fluent/fluent-bit', false, 'only under fluent-operator'],
    ['ghcr.io/huggingface/text-generation-inference', true, 'ghcr.io/huggingface/*'],
    // `docker.io/*`: one segment directly under docker.io (never a normalised Docker Hub name).
    ['docker.io/nginx', true, 'docker.io/*'],
    // Exact lines: the repository itself only.
    ['docker.io/library/nginx', true, 'docker.io/library/nginx'],
    ['docker.io/library/busybox', true, 'docker.io/library/busybox'],
    ['docker.io/library/nginx-unprivileged', false, 'exact, not a prefix'],
    ['docker.io/library/nginx/extra', false, 'exact, not a prefix'],
    ['docker.io/library/not-official', false, 'not listed'],
    ['quay.io/ceph/ceph', true, 'quay.io/ceph/ceph'],
    ['quay.io/ceph/other', false, 'only ceph and cosi under quay.io/ceph'],
    ['registry.heroiclabs.com/heroiclabs/nakama', true, 'registry.heroiclabs.com/heroiclabs/nakama'],
    ['docker.io/acme/app', false, 'an organisation the list does not name'],
    ['ghcr.io/acme/app', false, 'ghcr.io only per organisation'],
    ['quay.io/acme/app', false, 'quay.io only per organisation'],
    ['registry.corp.example/team/app', false, 'a registry the list does not name'],
    ['gcr.io', false, 'a registry alone is no repository'],
  ]
  for (const [repository, allowed, why] of cases) t.equal(list.allows(repository), allowed, `${repository}: ${why}`)
})

t.test('pattern forms beyond the published list, and lines that cannot be patterns', async (t) => {
  const { list, ignored } = parseAllowlist(
    [
      '# a comment',
      '',
      '  docker.io/team/*/sub  ',
      'Quay.IO/Org/App',
      'ghcr.io/acme/app-*',
      '127.0.0.1:5000/internal/**',
      'nohost',
      'docker.io//x',
      'docker.io/**/x',
      'docker.io/a**',
      'docker.io/UPPER case',
    ].join('\n'),
  )
  t.equal(list.patterns, 4)
  t.strictSame(
    ignored.map((i) => [i.line, i.reason]),
    [
      [7, 'not a registry/path pattern'],
      [8, 'empty segment or a character a repository name cannot hold'],
      [9, '** is only understood at the end of a pattern'],
      [10, '** must be a whole segment'],
      [11, 'empty segment or a character a repository name cannot hold'],
    ],
  )
  const cases: [string, boolean][] = [
    ['docker.io/team/a/sub', true],
    ['docker.io/team/a/other', false],
    ['docker.io/team/a/b/sub', false],
    ['quay.io/org/app', true],
    ['ghcr.io/acme/app-web', true],
    ['ghcr.io/acme/app-', true],
    ['ghcr.io/acme/other', false],
    ['ghcr.io/acme/app-web/x', false],
    ['127.0.0.1:5000/internal/a/b', true],
    ['127.0.0.1:5000/internal', false],
    ['docker.io/x', false],
  ]
  for (const [repository, allowed] of cases) t.equal(list.allows(repository), allowed, repository)
  t.equal(parseAllowlist('').list.patterns, 0)
  t.equal(parseAllowlist('').list.allows('docker.io/library/nginx'), false, 'an empty list serves nothing')
})
