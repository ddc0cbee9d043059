// Writes the AdmissionReviews the floor benchmark sends (test/fixtures/bench/*.json), shaped as
// kube-apiserver v1.35 sends a ReplicaSet's Pod CREATE: defaulted spec, service-account token
// volume and mount added by admission, default tolerations, managedFields of the controller.
//   npx tsx test/bench/make-fixtures.ts
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

interface ImageSpec {
  name: string
  image: string
}

const TEN: ImageSpec[] = [
  { name: 'migrate', image: 'ghcr.io/acme/shop-migrate:v2.14.0' },
  { name: 'wait-for-db', image: 'busybox:1.36.1' },
  { name: 'web', image: 'nginx:1.27.3' },
  { name: 'api', image: 'ghcr.io/acme/shop-api:v2.14.0' },
  { name: 'worker', image: 'quay.io/acme/shop-worker:v2.14.0' },
  { name: 'cache', image: 'redis:7.2.5-alpine' },
  { name: 'metrics', image: 'registry.k8s.io/kube-state-metrics/kube-state-metrics:v2.13.0' },
  { name: 'proxy', image: 'docker.io/envoyproxy/envoy:v1.31.2' },
  { name: 'log-shipper', image: 'docker.elastic.co/beats/filebeat:8.15.1' },
  { name: 'auth', image: `gcr.io/acme-prod/oauth2-proxy@sha256:${'3f1c9a7e'.repeat(8)}` },
]

// Images of a registry the configuration does not mirror: nothing to rewrite, nothing to warn.
const KEPT: ImageSpec[] = TEN.map((c, i) => ({ name: c.name, image: `harbor.corp.example/shop/${c.name}:v2.14.${i}` }))

function forty(): ImageSpec[] {
  const out: ImageSpec[] = []
  for (let i = 0; i < 40; i++) {
    const base = TEN[i % TEN.length]!
    out.push({ name: `${base.name}-${Math.floor(i / TEN.length)}`, image: base.image.replace(/:v?[\d.]+(-alpine)?$/, (m) => `${m}.${i}`) })
  }
  return out
}

const NS = 'shop'
const RS = 'shop-7d9f8b6c5d'
const POD_TEMPLATE_HASH = '7d9f8b6c5d'

function container(c: ImageSpec, init: boolean) {
  return {
    name: c.name,
    image: c.image,
    ...(init ? {} : { ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }),
    resources: { limits: { memory: '256Mi' }, requests: { cpu: '50m', memory: '128Mi' } },
    volumeMounts: [{ name: 'kube-api-access-x7k2p', readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  }
}

function fieldsFor(c: ImageSpec, init: boolean): Record<string, unknown> {
  return {
    '.': {},
    'f:image': {},
    'f:imagePullPolicy': {},
    'f:name': {},
    ...(init
      ? {}
      : {
          'f:ports': {
            '.': {},
            'k:{"containerPort":8080,"protocol":"TCP"}': { '.': {}, 'f:containerPort': {}, 'f:name': {}, 'f:protocol': {} },
          },
        }),
    'f:resources': { '.': {}, 'f:limits': { '.': {}, 'f:memory': {} }, 'f:requests': { '.': {}, 'f:cpu': {}, 'f:memory': {} } },
    'f:terminationMessagePath': {},
    'f:terminationMessagePolicy': {},
  }
  void c
}

function review(uid: string, images: ImageSpec[], initCount: number) {
  const inits = images.slice(0, initCount)
  const mains = images.slice(initCount)
  const specFields: Record<string, unknown> = {
    'f:containers': Object.fromEntries(mains.map((c) => [`k:{"name":"${c.name}"}`, fieldsFor(c, false)])),
    'f:dnsPolicy': {},
    'f:enableServiceLinks': {},
    ...(inits.length > 0
      ? { 'f:initContainers': Object.fromEntries(inits.map((c) => [`k:{"name":"${c.name}"}`, fieldsFor(c, true)])) }
      : {}),
    'f:restartPolicy': {},
    'f:schedulerName': {},
    'f:securityContext': { '.': {}, 'f:runAsNonRoot': {} },
    'f:serviceAccountName': {},
    'f:terminationGracePeriodSeconds': {},
  }
  return {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      namespace: NS,
      operation: 'CREATE',
      userInfo: {
        username: 'system:serviceaccount:kube-system:replicaset-controller',
        uid: 'b9e0c2a4-5d1f-4f7e-8a3b-6c2d1e0f9a87',
        groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'],
      },
      object: {
        kind: 'Pod',
        apiVersion: 'v1',
        metadata: {
          generateName: `${RS}-`,
          namespace: NS,
          uid: 'f2c8e1d0-7b3a-4e6f-9c5d-1a2b3c4d5e6f',
          creationTimestamp: '2026-11-29T19:30:00Z',
          labels: { app: 'shop', 'pod-template-hash': POD_TEMPLATE_HASH },
          ownerReferences: [
            {
              apiVersion: 'apps/v1',
              kind: 'ReplicaSet',
              name: RS,
              uid: '0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b',
              controller: true,
              blockOwnerDeletion: true,
            },
          ],
          managedFields: [
            {
              manager: 'kube-controller-manager',
              operation: 'Update',
              apiVersion: 'v1',
              time: '2026-11-29T19:30:00Z',
              fieldsType: 'FieldsV1',
              fieldsV1: {
                'f:metadata': {
                  'f:generateName': {},
                  'f:labels': { '.': {}, 'f:app': {}, 'f:pod-template-hash': {} },
                  'f:ownerReferences': { '.': {}, 'k:{"uid":"0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b"}': {} },
                },
                'f:spec': specFields,
              },
            },
          ],
        },
        spec: {
          volumes: [
            {
              name: 'kube-api-access-x7k2p',
              projected: {
                sources: [
                  { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
                  { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
                  { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
                ],
                defaultMode: 420,
              },
            },
          ],
          ...(inits.length > 0 ? { initContainers: inits.map((c) => container(c, true)) } : {}),
          containers: mains.map((c) => container(c, false)),
          restartPolicy: 'Always',
          terminationGracePeriodSeconds: 30,
          dnsPolicy: 'ClusterFirst',
          serviceAccountName: 'default',
          serviceAccount: 'default',
          securityContext: { runAsNonRoot: true },
          schedulerName: 'default-scheduler',
          tolerations: [
            { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
            { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
          ],
          priority: 0,
          enableServiceLinks: true,
          preemptionPolicy: 'PreemptLowerPriority',
        },
        status: { phase: 'Pending', qosClass: 'Burstable' },
      },
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
    },
  }
}

const dir = join(import.meta.dirname, '..', 'fixtures', 'bench')
const write = (file: string, value: unknown) => {
  const text = JSON.stringify(value)
  writeFileSync(join(dir, file), text)
  console.log(`${file}: ${text.length} bytes`)
}
write('review-1-image.json', review('4b6f0d2e-8a1c-4e3b-9f7d-5c2a1e0b3d11', [TEN[2]!], 0))
write('review-10-images.json', review('4b6f0d2e-8a1c-4e3b-9f7d-5c2a1e0b3d10', TEN, 2))
write('review-40-images.json', review('4b6f0d2e-8a1c-4e3b-9f7d-5c2a1e0b3d40', forty(), 4))
write('review-10-kept.json', review('4b6f0d2e-8a1c-4e3b-9f7d-5c2a1e0b3d0k', KEPT, 2))
