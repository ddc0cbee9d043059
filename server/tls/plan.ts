// What the self-managed TLS Secret should hold next: a CA, maybe the next CA staged, the
// trust bundle and a serving certificate. Pure apart from key generation.
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { createCa, describeCertificate, expiresWithin, issueServing, type KeyPairPem } from './certs.js'

const DAY = 86_400_000

export interface TlsTimings {
  caValidDays: number
  // The next CA is staged this long before the current one expires.
  caRenewBeforeDays: number
  // Time for every API server to see a new caBundle before the next CA signs anything.
  caPromotionDelayMs: number
  servingValidDays: number
  servingRenewBeforeDays: number
}

export const DEFAULT_TIMINGS: TlsTimings = {
  caValidDays: 3650,
  caRenewBeforeDays: 365,
  caPromotionDelayMs: 10 * 60_000,
  servingValidDays: 90,
  servingRenewBeforeDays: 30,
}

export interface TlsState {
  signer: KeyPairPem
  next?: { signer: KeyPairPem; stagedAt: Date }
  // PEM certificates, current signer first.
  trust: string[]
  serving: KeyPairPem
}

export type TlsChange = 'created' | 'ca-staged' | 'ca-promoted' | 'serving-issued' | 'trust-updated'

export interface TlsNames {
  dnsNames: readonly string[]
  ipAddresses?: readonly string[]
}

export function splitPems(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? []
}

export function joinPems(pems: readonly string[]): string {
  return pems.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join('')
}

function fingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256
}

function keyMatches(pair: KeyPairPem): boolean {
  try {
    return new X509Certificate(pair.certPem).checkPrivateKey(createPrivateKey(pair.keyPem))
  } catch {
    return false
  }
}

function usableSigner(pair: KeyPairPem | undefined, now: Date): pair is KeyPairPem {
  if (!pair || !keyMatches(pair)) return false
  const cert = new X509Certificate(pair.certPem)
  return cert.ca && !expiresWithin(pair.certPem, 0, now)
}

function servingIsGood(serving: KeyPairPem | undefined, signer: KeyPairPem, names: TlsNames, timings: TlsTimings, now: Date): boolean {
  if (!serving || !keyMatches(serving)) return false
  const cert = new X509Certificate(serving.certPem)
  const ca = new X509Certificate(signer.certPem)
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) return false
  const facts = describeCertificate(serving.certPem)
  if (facts.notAfter.getTime() <= now.getTime()) return false
  // Due for renewal, unless the CA's own expiry caps it: the next CA's promotion renews it then.
  const cappedBySigner = facts.notAfter.getTime() >= describeCertificate(signer.certPem).notAfter.getTime() - 60_000
  if (expiresWithin(serving.certPem, timings.servingRenewBeforeDays, now) && !cappedBySigner) return false
  return names.dnsNames.every((n) => facts.dnsNames.includes(n)) && (names.ipAddresses ?? []).every((ip) => facts.ipAddresses.includes(ip))
}

async function issueFor(signer: KeyPairPem, names: TlsNames, timings: TlsTimings, now: Date): Promise<KeyPairPem> {
  // Never outlive the signer: a serving certificate past its CA verifies nowhere.
  const signerLeftDays = (describeCertificate(signer.certPem).notAfter.getTime() - now.getTime()) / DAY
  const validDays = Math.min(timings.servingValidDays, signerLeftDays)
  return issueServing(signer, { dnsNames: names.dnsNames, ipAddresses: names.ipAddresses, validDays, now })
}

/**
 * The state the Secret should hold next, from what it holds now (undefined: nothing usable).
 * Pure apart from key generation; `changes` is empty when nothing needs writing.
 */
export async function planTls(
  current: TlsState | undefined,
  names: TlsNames,
  timings: TlsTimings,
  now: Date,
): Promise<{ state: TlsState; changes: TlsChange[] }> {
  if (!current || !usableSigner(current.signer, now)) {
    const signer = await createCa('mirrorhook webhook CA', timings.caValidDays, now)
    const serving = await issueFor(signer, names, timings, now)
    return { state: { signer, trust: [signer.certPem], serving }, changes: ['created'] }
  }
  const changes: TlsChange[] = []
  let { signer, next, serving } = current
  if (next && !usableSigner(next.signer, now)) next = undefined
  if (next && now.getTime() - next.stagedAt.getTime() >= timings.caPromotionDelayMs) {
    signer = next.signer
    next = undefined
    changes.push('ca-promoted')
  }
  if (!next && expiresWithin(signer.certPem, timings.caRenewBeforeDays, now)) {
    next = { signer: await createCa('mirrorhook webhook CA', timings.caValidDays, now), stagedAt: now }
    changes.push('ca-staged')
  }
  if (!servingIsGood(serving, signer, names, timings, now)) {
    serving = await issueFor(signer, names, timings, now)
    changes.push('serving-issued')
  }
  // Previous CAs stay trusted until they expire: a replica may still serve a certificate they signed.
  const wanted = [signer.certPem, ...(next ? [next.signer.certPem] : []), ...current.trust]
  const seen = new Set<string>()
  const trust: string[] = []
  for (const pem of wanted) {
    let id: string
    try {
      id = fingerprint(pem)
    } catch {
      continue
    }
    if (seen.has(id) || expiresWithin(pem, 0, now)) continue
    seen.add(id)
    trust.push(pem)
  }
  if (changes.length === 0 && joinPems(trust) !== joinPems(current.trust)) changes.push('trust-updated')
  return { state: { signer, next, trust, serving }, changes }
}
