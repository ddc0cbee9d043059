// kwok Stages for the test cluster: the set kwokctl loads by default, plus mirrorhook's own
// image-pull Stages that make the simulated nodes unable to reach some registries.
//
// kwok's own Stages are copied verbatim from sigs.k8s.io/kwok v0.8.0 (kustomize/stage/fast:
// node/fast, node/heartbeat-with-lease, pod/fast) into test/support/kwok/*.yaml.
//
// mirrorhook's Stages (generated below) apply to a Pod on a kwok node while one of its images
// is on a registry declared unreachable. They carry weight 1, so kwok picks them over
// kwok's pod-ready (weight 0) whenever both match (kwok's lifecycle.Match: a matching Stage
// with a positive weight wins over the zero-weight ones). The container then waits as the
// kubelet shows a pull that containerd could not make:
//   ErrImagePull      rpc error: code = DeadlineExceeded desc = failed to pull and unpack image
//                     "docker.io/library/nginx:1.25": failed to resolve reference "docker.io/library/nginx:1.25":
//                     failed to do request: Head "https://registry-1.docker.io/v2/library/nginx/manifests/1.25":
//                     dial tcp 203.0.113.10:443: i/o timeout
//   ImagePullBackOff  Back-off pulling image "nginx:1.25": ErrImagePull: <the same error>
// and goes back to ErrImagePull after the back-off, as the kubelet retries. An image on a
// registry not declared unreachable (the mirror) runs: kwok's pod-ready Stage takes the Pod.
// The declaration is given when kwok starts; Kwok.setUnreachable() restarts kwok, which then
// plays the Stages again for every Pod it manages.
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments, stringify as toYaml } from 'yaml'

const HERE = path.dirname(fileURLToPath(import.meta.url))
export const KWOK_STAGE_FILES = [
  'node-initialize.yaml',
  'node-heartbeat-with-lease.yaml',
  'pod-ready.yaml',
  'pod-complete.yaml',
  'pod-delete.yaml',
] as const

/** kwok v0.8.0's default Stages (what kwokctl loads), as one multi-document YAML text. */
export function kwokDefaultStages(): string {
  return KWOK_STAGE_FILES.map((f) => readFileSync(path.join(HERE, 'kwok', f), 'utf8')).join('\n---\n')
}

export interface Unreachable {
  /** Registries the nodes cannot reach, as in an image reference: docker.io, quay.io, 127.0.0.1:5000. */
  registries: string[]
  /** Only these nodes cannot reach them (default: every kwok node). */
  nodes?: string[]
}

/** The address every unreachable registry resolves to in the messages (TEST-NET-3). */
export const UNREACHABLE_IP = '203.0.113.10'

/** Docker Hub's aliases are Docker Hub, as containerd and the kubelet normalise them. */
export function registryKey(registry: string): string {
  const r = registry.toLowerCase()
  return r === 'index.docker.io' || r === 'registry-1.docker.io' ? 'docker.io' : r
}

// jq (gojq) run by kwok's selector on the Pod: the registry of each image, as the kubelet
// splits a reference (a first component with "." or ":" or "localhost" is a registry).
const JQ_REGISTRY =
  'def registry: (split("/")) as $p | (if ($p | length) > 1 and (($p[0] | test("[.:]")) or $p[0] == "localhost") then $p[0] else "docker.io" end)' +
  ' | ascii_downcase | if . == "index.docker.io" or . == "registry-1.docker.io" then "docker.io" else . end;'

function jqUnreachable(u: Unreachable): string {
  const regs = JSON.stringify([...new Set(u.registries.map(registryKey))])
  const onNode = u.nodes ? ` and (.spec.nodeName as $n | any(${JSON.stringify(u.nodes)}[]; . == $n))` : ''
  return (
    `(${regs} as $u | [(.spec.initContainers // [])[], .spec.containers[] | .image | registry]` +
    ` | any(.[]; . as $r | any($u[]; . == $r)))${onNode}`
  )
}

const JQ_WAITING = '[(.status.initContainerStatuses // [])[], (.status.containerStatuses // [])[] | .state.waiting.reason // empty]'

// Go template (kwok's renderer: text/template + sprig): for the image in $img, sets $reg (the
// registry, lower case, Docker Hub as docker.io), $err (containerd's error through the CRI) and
// $specRef (the reference with the kubelet's default tag, as in "Back-off pulling image").
// containerd: pkg/cri/server/image_pull.go "failed to pull and unpack image %q: %w";
// remotes/docker/resolver.go "failed to resolve reference %q: %w" and "failed to do request: %w".
const TPL_IMAGE = `
{{- $parts := splitList "/" $img }}
{{- $domain := "docker.io" }}{{ $remainder := $img }}
{{- if and (gt (len $parts) 1) (or (contains "." (first $parts)) (contains ":" (first $parts)) (eq (first $parts) "localhost")) }}{{ $domain = first $parts }}{{ $remainder = join "/" (rest $parts) }}{{ end }}
{{- $reg := lower $domain }}{{ if or (eq $reg "index.docker.io") (eq $reg "registry-1.docker.io") }}{{ $reg = "docker.io" }}{{ $domain = "docker.io" }}{{ end }}
{{- if and (eq $reg "docker.io") (not (contains "/" $remainder)) }}{{ $remainder = printf "library/%s" $remainder }}{{ end }}
{{- $digest := "" }}{{ $named := $remainder }}
{{- if contains "@" $remainder }}{{ $digest = regexReplaceAll "^[^@]*@" $remainder "" }}{{ $named = regexReplaceAll "@.*$" $remainder "" }}{{ end }}
{{- $tag := trimPrefix ":" (regexFind ":[^/:]+$" $named) }}
{{- $repo := regexReplaceAll ":[^/:]+$" $named "" }}
{{- $norm := printf "%s/%s" $domain $remainder }}{{ $specRef := $img }}
{{- if and (eq $tag "") (eq $digest "") }}{{ $norm = printf "%s:latest" $norm }}{{ $specRef = printf "%s:latest" $img }}{{ $tag = "latest" }}{{ end }}
{{- $host := $domain }}{{ if eq $reg "docker.io" }}{{ $host = "registry-1.docker.io" }}{{ end }}
{{- $mref := $tag }}{{ if ne $digest "" }}{{ $mref = $digest }}{{ end }}
{{- $err := printf "rpc error: code = DeadlineExceeded desc = failed to pull and unpack image %q: failed to resolve reference %q: failed to do request: Head %q: dial tcp ${UNREACHABLE_IP}:443: i/o timeout" $norm $norm (printf "https://%s/v2/%s/manifests/%s" $host $repo $mref) }}
{{- $down := and (has $reg $unreachable) $onNode }}`

function statusTemplate(u: Unreachable, reason: 'ErrImagePull' | 'ImagePullBackOff'): string {
  const regs = [...new Set(u.registries.map(registryKey))].map((r) => JSON.stringify(r)).join(' ')
  const nodes = u.nodes ? `(has .spec.nodeName (list ${u.nodes.map((n) => JSON.stringify(n)).join(' ')}))` : 'true'
  const message =
    reason === 'ErrImagePull' ? '{{ $err | Quote }}' : '{{ printf "Back-off pulling image %q: ErrImagePull: %s" $specRef $err | Quote }}'
  // Shapes follow the kubelet: an init container that cannot be pulled blocks the Pod in
  // Init:ErrImagePull (later init containers and all containers wait PodInitializing); a
  // container that cannot be pulled waits while the others run; the Pod stays Pending.
  return `{{ $now := Now }}
{{ $unreachable := list ${regs} }}
{{ $onNode := ${nodes} }}
{{ $blocked := false }}
{{ $failing := list }}
initContainerStatuses:
{{ range .spec.initContainers }}
{{ $img := .image }}${TPL_IMAGE}
- image: {{ .image | Quote }}
  imageID: ""
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  {{ if $blocked }}
  started: false
  state:
    running: null
    terminated: null
    waiting:
      reason: PodInitializing
  {{ else if $down }}
  started: false
  state:
    running: null
    terminated: null
    waiting:
      reason: ${reason}
      message: ${message}
  {{ $blocked = true }}{{ $failing = append $failing .name }}
  {{ else if eq .restartPolicy "Always" }}
  started: true
  state:
    waiting: null
    terminated: null
    running:
      startedAt: {{ $now | Quote }}
  {{ else }}
  started: false
  state:
    waiting: null
    running: null
    terminated:
      exitCode: 0
      finishedAt: {{ $now | Quote }}
      reason: Completed
      startedAt: {{ $now | Quote }}
  {{ end }}
{{ end }}
{{ $initBlocked := $blocked }}
{{ $initFailing := $failing }}
{{ $unready := list }}
containerStatuses:
{{ range .spec.containers }}
{{ $img := .image }}${TPL_IMAGE}
- image: {{ .image | Quote }}
  imageID: ""
  name: {{ .name | Quote }}
  restartCount: 0
  {{ if $initBlocked }}
  ready: false
  started: false
  state:
    running: null
    terminated: null
    waiting:
      reason: PodInitializing
  {{ $unready = append $unready .name }}
  {{ else if $down }}
  ready: false
  started: false
  state:
    running: null
    terminated: null
    waiting:
      reason: ${reason}
      message: ${message}
  {{ $unready = append $unready .name }}
  {{ else }}
  ready: true
  started: true
  state:
    waiting: null
    terminated: null
    running:
      startedAt: {{ $now | Quote }}
  {{ end }}
{{ end }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodReadyToStartContainers
{{ if $initBlocked }}
- lastTransitionTime: {{ $now | Quote }}
  message: {{ printf "containers with incomplete status: [%s]" (join " " $initFailing) | Quote }}
  reason: ContainersNotInitialized
  status: "False"
  type: Initialized
{{ else }}
- lastTransitionTime: {{ $now | Quote }}
  message: null
  reason: null
  status: "True"
  type: Initialized
{{ end }}
{{ if $unready }}
- lastTransitionTime: {{ $now | Quote }}
  message: {{ printf "containers with unready status: [%s]" (join " " $unready) | Quote }}
  reason: ContainersNotReady
  status: "False"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  message: {{ printf "containers with unready status: [%s]" (join " " $unready) | Quote }}
  reason: ContainersNotReady
  status: "False"
  type: ContainersReady
phase: Pending
{{ else }}
- lastTransitionTime: {{ $now | Quote }}
  message: null
  reason: null
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  message: null
  reason: null
  status: "True"
  type: ContainersReady
phase: Running
{{ end }}
{{ if not .status.podIP }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
startTime: {{ $now | Quote }}
{{ end }}
`
}

function podStage(name: string, key: string, next: string, delayMs: number): Record<string, unknown> {
  return {
    apiVersion: 'kwok.x-k8s.io/v1alpha1',
    kind: 'Stage',
    metadata: { name },
    spec: {
      resourceRef: { apiGroup: 'v1', kind: 'Pod' },
      selector: {
        matchExpressions: [
          { key: '.metadata.deletionTimestamp', operator: 'DoesNotExist' },
          { key: '.status.phase', operator: 'In', values: ['Pending'] },
          { key, operator: 'In', values: ['true'] },
        ],
      },
      weight: 1,
      ...(delayMs > 0 ? { delay: { durationMilliseconds: delayMs } } : {}),
      next: { statusTemplate: next },
    },
  }
}

export interface PullStageTiming {
  /**
   * Delay of kwok's pod-ready and pod-complete Stages (default 0: kwok's fast set as it is, a Job's
   * Pod completes within milliseconds of its creation). kwok's own pod/general set waits 1 s and
   * more; a few hundred ms keep a controller's own bookkeeping ahead of the Pods it creates.
   */
  podStartDelayMs?: number
  /** ErrImagePull → ImagePullBackOff (default 1 s). */
  backOffAfterMs?: number
  /** ImagePullBackOff → ErrImagePull again, the kubelet's retry (default 10 s, its first back-off). */
  retryAfterMs?: number
}

/** mirrorhook's image-pull Stages for the registries declared unreachable (none: no Stage). */
export function unreachableStages(u: Unreachable, timing: PullStageTiming = {}): Record<string, unknown>[] {
  if (u.registries.length === 0) return []
  const down = `${JQ_REGISTRY} ${jqUnreachable(u)}`
  const waiting = (reasons: string[]) => `(${JQ_WAITING} | any(.[]; ${reasons.map((r) => `. == "${r}"`).join(' or ')}))`
  return [
    podStage(
      'mirrorhook-image-pull-error',
      `${down} and (${waiting(['ErrImagePull', 'ImagePullBackOff'])} | not)`,
      statusTemplate(u, 'ErrImagePull'),
      0,
    ),
    podStage(
      'mirrorhook-image-pull-backoff',
      `${down} and ${waiting(['ErrImagePull'])}`,
      statusTemplate(u, 'ImagePullBackOff'),
      timing.backOffAfterMs ?? 1_000,
    ),
    podStage(
      'mirrorhook-image-pull-retry',
      `${down} and ${waiting(['ImagePullBackOff'])}`,
      statusTemplate(u, 'ErrImagePull'),
      timing.retryAfterMs ?? 10_000,
    ),
  ]
}

/**
 * A Pod still waiting on a pull that its node can now make (the registry was declared reachable
 * again, or never declared): its next retry succeeds and the containers run (the kubelet's
 * retry after the back-off; here at once).
 */
export function recoveredStage(u: Unreachable): Record<string, unknown> {
  const down = u.registries.length === 0 ? 'false' : `${JQ_REGISTRY} ${jqUnreachable(u)}`
  return podStage(
    'mirrorhook-image-pull-recovered',
    `(${down} | not) and (${JQ_WAITING} | any(.[]; . == "ErrImagePull" or . == "ImagePullBackOff"))`,
    statusTemplate(u, 'ErrImagePull'),
    0,
  )
}

/** Every Stage kwok is given: its defaults, then mirrorhook's. */
export function kwokStagesYaml(u: Unreachable, timing: PullStageTiming = {}): string {
  const own = [...unreachableStages(u, timing), recoveredStage(u)].map((s) => toYaml(s, { lineWidth: 0 }))
  let defaults = kwokDefaultStages()
  if (timing.podStartDelayMs) {
    const docs = parseAllDocuments(defaults)
    for (const d of docs) {
      const name = d.getIn(['metadata', 'name'])
      if (name === 'pod-ready' || name === 'pod-complete') d.setIn(['spec', 'delay'], { durationMilliseconds: timing.podStartDelayMs })
    }
    defaults = docs.map((d) => d.toString({ lineWidth: 0 })).join('---\n')
  }
  return [defaults, ...own].join('\n---\n')
}
