// The self-managed TLS state as a Secret, and back.
import type { V1Secret } from '@kubernetes/client-node'
import { managedLabels } from '../kube/labels.js'
import { joinPems, splitPems, type TlsState } from './plan.js'

export const SECRET_KEYS = {
  cert: 'tls.crt',
  key: 'tls.key',
  // What clients trust: the current CA, plus the next one or the previous one during a rotation.
  trust: 'ca.crt',
  signerCert: 'signer.crt',
  signerKey: 'signer.key',
  nextSignerCert: 'next-signer.crt',
  nextSignerKey: 'next-signer.key',
} as const
export const STAGED_AT_ANNOTATION = 'mirrorhook.io/next-signer-staged-at'
const MANAGED_BY = managedLabels('tls')
export const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')
const unb64 = (s: string | undefined) => (s === undefined ? undefined : Buffer.from(s, 'base64').toString('utf8'))

export function stateFromSecret(secret: V1Secret): TlsState | undefined {
  const data = secret.data ?? {}
  const get = (key: string) => unb64(data[key])
  const signerCert = get(SECRET_KEYS.signerCert)
  const signerKey = get(SECRET_KEYS.signerKey)
  const cert = get(SECRET_KEYS.cert)
  const key = get(SECRET_KEYS.key)
  if (!signerCert || !signerKey) return undefined
  const nextCert = get(SECRET_KEYS.nextSignerCert)
  const nextKey = get(SECRET_KEYS.nextSignerKey)
  const stagedAt = new Date(secret.metadata?.annotations?.[STAGED_AT_ANNOTATION] ?? Number.NaN)
  return {
    signer: { certPem: signerCert, keyPem: signerKey },
    next:
      nextCert && nextKey && !Number.isNaN(stagedAt.getTime()) ? { signer: { certPem: nextCert, keyPem: nextKey }, stagedAt } : undefined,
    trust: splitPems(get(SECRET_KEYS.trust) ?? ''),
    serving: { certPem: cert ?? '', keyPem: key ?? '' },
  }
}

export function secretFromState(name: string, namespace: string, state: TlsState, base?: V1Secret): V1Secret {
  const annotations = { ...(base?.metadata?.annotations ?? {}) }
  delete annotations[STAGED_AT_ANNOTATION]
  if (state.next) annotations[STAGED_AT_ANNOTATION] = state.next.stagedAt.toISOString()
  const data: Record<string, string> = {
    [SECRET_KEYS.cert]: b64(state.serving.certPem),
    [SECRET_KEYS.key]: b64(state.serving.keyPem),
    [SECRET_KEYS.trust]: b64(joinPems(state.trust)),
    [SECRET_KEYS.signerCert]: b64(state.signer.certPem),
    [SECRET_KEYS.signerKey]: b64(state.signer.keyPem),
  }
  if (state.next) {
    data[SECRET_KEYS.nextSignerCert] = b64(state.next.signer.certPem)
    data[SECRET_KEYS.nextSignerKey] = b64(state.next.signer.keyPem)
  }
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'kubernetes.io/tls',
    metadata: {
      ...(base?.metadata ?? {}),
      name,
      namespace,
      labels: { ...(base?.metadata?.labels ?? {}), ...MANAGED_BY },
      annotations,
    },
    data,
  }
}
