// The kubelet's pull messages as real clusters printed them (containerd, CRI-O,
// dockershim), and what each one says about the registry.
import t from 'tap'
import {
  classifyPullFailure,
  meansUnreachable,
  parseFailedPullMessage,
  parseGoDuration,
  parsePulledMessage,
  type PullFailureKind,
} from '../../server/reachability/classify.js'

// [runtime, message as reported (Failed event text or waiting message), kind, cause]
const messages: [string, string, PullFailureKind, string][] = [
  [
    'containerd: connect timeout',
    'rpc error: code = DeadlineExceeded desc = failed to pull and unpack image "k8s.gcr.io/conformance:v1.28.5": failed to resolve reference "k8s.gcr.io/conformance:v1.28.5": failed to do request: Head "https://k8s.gcr.io/v2/conformance/manifests/v1.28.5": dial tcp 64.233.189.82:443: i/o timeout',
    'network',
    'i/o timeout',
  ],
  [
    'containerd: registry.k8s.io redirect target times out',
    'rpc error: code = Unknown desc = failed to pull and unpack image "registry.k8s.io/nfd/node-feature-discovery:v0.12.1": failed to resolve reference "registry.k8s.io/nfd/node-feature-discovery:v0.12.1": failed to do request: Head "https://europe-west2-docker.pkg.dev/v2/k8s-artifacts-prod/images/nfd/node-feature-discovery/manifests/v0.12.1": dial tcp 108.177.15.82:443: i/o timeout',
    'network',
    'i/o timeout',
  ],
  [
    'containerd: reset by a firewall',
    'rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/rancher/kubectl:v1.28.2": failed to resolve reference "docker.io/rancher/kubectl:v1.28.2": failed to do request: Head "https://registry-1.docker.io/v2/rancher/kubectl/manifests/v1.28.2": read tcp 9.144.23.87:54336->3.219.239.5:443: read: connection reset by peer',
    'network',
    'connection reset',
  ],
  [
    'containerd: layer download reset',
    'rpc error: code = Unknown desc = failed to pull image "docker.io/library/golang:1.9": httpReaderSeeker: failed open: failed to do request: Get https://winlayers.cdn.mscr.io/layers/windowsservercore:10.0.14393.2430_en-us_lC70T4DORfuKwMFehUmvjXZb6JEy9s8Y: read tcp 192.168.1.112:49380->204.79.197.219:443: read: connection reset by peer',
    'network',
    'connection reset',
  ],
  [
    'containerd: 503 from a registry',
    'rpc error: code = Unknown desc = failed to pull and unpack image "sealos.hub:5000/kube-proxy:v1.24.0": failed to resolve reference "sealos.hub:5000/kube-proxy:v1.24.0": pulling from host sealos.hub:5000 failed with status code [manifests v1.24.0]: 503 Service Unavailable',
    'network',
    'HTTP 503',
  ],
  [
    'containerd: Docker Hub rate limit',
    'rpc error: code = Unknown desc = failed to pull and unpack image "docker.io/library/centos:latest": failed to copy: httpReaderSeeker: failed open: unexpected status code https://registry-1.docker.io/v2/library/centos/manifests/sha256:dbbacecc49b088458781c16f3775f2a2ec7521079034a7ba499c8b0bb7f86875: 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit',
    'rate-limited',
    'rate limited (HTTP 429)',
  ],
  [
    'containerd: tag does not exist',
    'rpc error: code = NotFound desc = failed to pull and unpack image "registry.k8s.io/kube-apiserver-amd64:v1.30.0-alpha.1.107_052bce26f4f48b": failed to resolve reference "registry.k8s.io/kube-apiserver-amd64:v1.30.0-alpha.1.107_052bce26f4f48b": registry.k8s.io/kube-apiserver-amd64:v1.30.0-alpha.1.107_052bce26f4f48b: not found',
    'not-found',
    'not found',
  ],
  [
    'containerd: repository does not exist (Docker Hub answers with auth)',
    'failed to resolve reference "docker.io/image/doesnotexist:latest": pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed',
    'not-found',
    'repository does not exist or requires login',
  ],
  [
    'containerd: the mirror host refuses (HEAD has no body)',
    'failed to resolve reference "docker.io/library/nginx-latest:latest": unexpected status from HEAD request to https://docker.m.daocloud.io/v2/library/nginx-latest/manifests/latest?ns=docker.io: 403 Forbidden',
    'forbidden',
    'HTTP 403 Forbidden',
  ],
  [
    'containerd: the mirror token endpoint refuses',
    'failed to resolve reference "m.daocloud.io/docker.io/library/nginx:latest": failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://auth.m.daocloud.io/auth/token?scope=repository%3Adocker.io%2Flibrary%2Fnginx%3Apull&service=m.daocloud.io: 403 Forbidden',
    'forbidden',
    'HTTP 403 Forbidden',
  ],
  [
    'containerd: cancelled (no progress, or the Pod went away)',
    'rpc error: code = Canceled desc = failed to pull and unpack image "private_registery.mydomain/csg/idrac_to_kafka:20250429T0012": context canceled',
    'other',
    'unrecognised pull error',
  ],
  [
    'CRI-O: connection refused',
    'rpc error: code = Unknown desc = error pinging docker registry registry.minikube: Get https://registry.minikube/v2/: dial tcp 10.101.166.84:443: connect: connection refused',
    'network',
    'connection refused',
  ],
  [
    'CRI-O: proxy name does not resolve',
    'rpc error: code = Unknown desc = error pinging docker registry registry-1.docker.io: Get "https://registry-1.docker.io/v2/": proxyconnect tcp: dial tcp: lookup http: Temporary failure in name resolution',
    'network',
    'DNS lookup failed',
  ],
  [
    'CRI-O: ping timeout',
    'rpc error: code = Unknown desc = pinging docker registry returned: Get http://registry-1.docker.io/v2/: dial tcp 34.199.40.84:80: i/o timeout',
    'network',
    'i/o timeout',
  ],
  [
    'CRI-O: 503',
    'initializing source docker://registry.access.redhat.com/ubi8:latest: reading manifest latest in registry.access.redhat.com/ubi8: received unexpected HTTP status: 503 Service Unavailable',
    'network',
    'HTTP 503',
  ],
  [
    'CRI-O: rate limit',
    'rpc error: code = Unknown desc = Error reading manifest latest in docker.io/obsidiandynamics/kafdrop: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit',
    'rate-limited',
    'rate limited (HTTP 429)',
  ],
  [
    'CRI-O: private repository',
    'rpc error: code = Unknown desc = Error reading manifest latest in docker.io/crio/busybox: errors:\ndenied: requested access to the resource is denied\nunauthorized: authentication required',
    'unauthorized',
    'unauthorized',
  ],
  [
    'CRI-O: not in the mirror allowlist',
    'initializing source docker://m.daocloud.io/docker.io/omicsclass/genome-comparison:v1.0: reading manifest v1.0 in m.daocloud.io/docker.io/omicsclass/genome-comparison: denied: 🚫 这镜像不在白名单. this image is not in the allowlist. 📦 https://github.com/DaoCloud/public-image-mirror/issues/2328 🔗',
    'forbidden',
    'not in the mirror allowlist',
  ],
  [
    'dockershim: TLS handshake timeout',
    'rpc error: code = Unknown desc = Error response from daemon: Get https://registry-1.docker.io/v2/: net/http: TLS handshake timeout',
    'network',
    'TLS handshake timeout',
  ],
  [
    'dockershim: client timeout',
    'rpc error: code = Unknown desc = Error response from daemon: Get https://k8s.gcr.io/v2/: net/http: request canceled while waiting for connection (Client.Timeout exceeded while awaiting headers)',
    'network',
    'HTTP client timeout',
  ],
  [
    'dockershim: DNS lookup timeout',
    'Error response from daemon: Get https://registry-1.docker.io/v2/: dial tcp: lookup registry-1.docker.io on 10.0.2.3:53: read udp 10.0.2.15:54567->10.0.2.3:53: i/o timeout',
    'network',
    'DNS lookup failed',
  ],
  [
    'dockershim: no such host',
    'Error response from daemon: Get https://catalog.shurenyun.com/v1/_ping: dial tcp: lookup catalog.shurenyun.com on 100.100.2.136:53: no such host',
    'network',
    'DNS: no such host',
  ],
  [
    'dockershim: redirected layer reset',
    'rpc error: code = Unknown desc = Error response from daemon: Get "https://us-east4-docker.pkg.dev/v2/k8s-artifacts-prod/images/ingress-nginx/kube-webhook-certgen/manifests/sha256:39c5b2e3310dc4264d638ad28d9d1d96c4cbb2b2dcfb52368fe4e3c63f61e10f": read tcp 10.183.231.70:43720->142.251.163.82:443: read: connection reset by peer',
    'network',
    'connection reset',
  ],
  [
    'dockershim: rate limit',
    'rpc error: code = Unknown desc = Error response from daemon: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit',
    'rate-limited',
    'rate limited (HTTP 429)',
  ],
  [
    'dockershim: not in the mirror allowlist',
    "Error response from daemon: pull access denied for m.daocloud.io/docker.io/library/nginx, repository does not exist or may require 'docker login': denied: 🚫 👀-> https://github.com/DaoCloud/public-image-mirror/issues/2328 🔗 这镜像不在白名单. this image is not in the allowlist.",
    'forbidden',
    'not in the mirror allowlist',
  ],
  [
    'dockershim: private image on Docker Hub',
    "rpc error: code = Unknown desc = Error response from daemon: pull access denied for acme/private, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
    'not-found',
    'repository does not exist or requires login',
  ],
  [
    'dockershim: manifest unknown',
    'rpc error: code = Unknown desc = Error response from daemon: manifest for nginx:1.999 not found: manifest unknown: manifest unknown',
    'not-found',
    'not found',
  ],
  [
    'kubelet: registry unavailable (CRI error wrapped by the kubelet)',
    'image pull failed for quay.io/acme/app:1 because the registry is unavailable: dial tcp 3.3.3.3:443: connect: no route to host',
    'network',
    'no route to host',
  ],
  [
    'kubelet: signature validation is not a registry failure',
    'image pull failed for typo_image because the signature validation failed',
    'other',
    'not a registry failure',
  ],
  [
    'kubelet: invalid name',
    'Failed to apply default image tag "Nginx": couldn\'t parse image name "Nginx": InvalidImageName',
    'other',
    'not a registry failure',
  ],
]

t.test('pull failure messages from the three runtimes', async (t) => {
  for (const [runtime, message, kind, cause] of messages) {
    const got = classifyPullFailure(message)
    t.equal(got.kind, kind, `${runtime}: ${kind}`)
    t.equal(got.cause, cause, `${runtime}: cause`)
  }
})

t.test('only network failures and rate limits make a registry unreachable', async (t) => {
  const verdicts = Object.fromEntries(
    (['network', 'rate-limited', 'forbidden', 'unauthorized', 'not-found', 'other'] as const).map((k) => [k, meansUnreachable(k)]),
  )
  t.strictSame(verdicts, { network: true, 'rate-limited': true, forbidden: false, unauthorized: false, 'not-found': false, other: false })
})

t.test('Failed events carry the image and the error', async (t) => {
  t.strictSame(
    parseFailedPullMessage(
      'Failed to pull image "busybox": rpc error: code = Unknown desc = Error response from daemon: Get https://registry-1.docker.io/v2/: net/http: TLS handshake timeout',
    ),
    {
      image: 'busybox',
      error:
        'rpc error: code = Unknown desc = Error response from daemon: Get https://registry-1.docker.io/v2/: net/http: TLS handshake timeout',
    },
  )
  t.equal(parseFailedPullMessage('Error: ErrImagePull'), undefined)
})

t.test('Go durations as the kubelet prints them', async (t) => {
  const cases: [string, number | undefined][] = [
    ['15.981s', 15981],
    ['1m21.284220239s', 81284.220239],
    ['2m7.876426944s', 127876.426944],
    ['49.18401355s', 49184.01355],
    ['523ms', 523],
    ['1h0m0s', 3600000],
    ['0s', 0],
    ['1.5µs', 0.0015],
    ['soon', undefined],
    ['', undefined],
    ['5 s', undefined],
  ]
  for (const [text, ms] of cases) {
    const got = parseGoDuration(text)
    t.equal(got, ms, `${text} = ${ms} ms`)
  }
})

t.test('Pulled events: current and older kubelet wording', async (t) => {
  t.strictSame(
    parsePulledMessage('Successfully pulled image "g1g1/py-kube" in 15.981s (15.981s including waiting). Image size: 129338587 bytes.'),
    {
      image: 'g1g1/py-kube',
      durationMs: 15981,
      sizeBytes: 129338587,
    },
  )
  const waited = parsePulledMessage(
    'Successfully pulled image "docker.m.daocloud.io/library/ubuntu:22.10" in 49.18401355s (1m12.871704s including waiting)',
  )
  t.strictSame(
    waited,
    { image: 'docker.m.daocloud.io/library/ubuntu:22.10', durationMs: 49184.01355, sizeBytes: undefined },
    'the pull itself, not the time spent queued behind other pulls',
  )
  const old = parsePulledMessage('Successfully pulled image "docker.m.daocloud.io/library/ubuntu:22.10" in 1m21.284220239s')
  t.strictSame(
    old,
    { image: 'docker.m.daocloud.io/library/ubuntu:22.10', durationMs: 81284.220239, sizeBytes: undefined },
    'older kubelets: one duration',
  )
  t.equal(parsePulledMessage('Container image "nginx:1.25" already present on machine'), undefined)
  t.equal(parsePulledMessage('Successfully pulled image "x" in a while'), undefined)
})
