// X.509 for the webhook: a CA and a serving certificate it signs (ECDSA P-256).
// Used for the development certificates and by the self-managed in-cluster mode.
import 'reflect-metadata'
import { webcrypto } from 'node:crypto'
import * as x509 from '@peculiar/x509'

x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const

export interface KeyPairPem {
  certPem: string
  keyPem: string
}

export interface IssuedCertificates {
  ca: KeyPairPem
  serving: KeyPairPem
}

const DAY = 86_400_000

function serialNumber(): string {
  // Positive 128-bit serial: first byte below 0x80.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16))
  bytes[0] = (bytes[0] ?? 0) & 0x7f
  return Buffer.from(bytes).toString('hex')
}

async function exportKey(key: CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', key)
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY')
}

async function importKey(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0]
  if (!der) throw new Error('no private key in PEM')
  return webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, true, ['sign'])
}

export async function createCa(commonName: string, validDays: number, now = new Date()): Promise<KeyPairPem> {
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=${commonName}`,
    notBefore: new Date(now.getTime() - 5 * 60_000),
    notAfter: new Date(now.getTime() + validDays * DAY),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  })
  return { certPem: cert.toString('pem'), keyPem: await exportKey(keys.privateKey) }
}

export interface ServingOptions {
  dnsNames: readonly string[]
  ipAddresses?: readonly string[]
  validDays: number
  now?: Date
}

export async function issueServing(ca: KeyPairPem, options: ServingOptions): Promise<KeyPairPem> {
  const now = options.now ?? new Date()
  const caCert = new x509.X509Certificate(ca.certPem)
  const caKey = await importKey(ca.keyPem)
  const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])
  const names = [
    ...options.dnsNames.map((value) => ({ type: 'dns' as const, value })),
    ...(options.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ]
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: `CN=${options.dnsNames[0] ?? options.ipAddresses?.[0] ?? 'mirrorhook'}`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - 5 * 60_000),
    notAfter: new Date(now.getTime() + options.validDays * DAY),
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension(names, false),
      await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
    ],
  })
  return { certPem: cert.toString('pem'), keyPem: await exportKey(keys.privateKey) }
}

export interface CertificateFacts {
  notBefore: Date
  notAfter: Date
  dnsNames: string[]
  ipAddresses: string[]
}

export function describeCertificate(pem: string): CertificateFacts {
  const cert = new x509.X509Certificate(pem)
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension)
  const entries = san?.names.items ?? []
  return {
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    dnsNames: entries.filter((n) => n.type === 'dns').map((n) => n.value),
    ipAddresses: entries.filter((n) => n.type === 'ip').map((n) => n.value),
  }
}

/** True when the certificate is within `marginDays` of expiry (or past it). */
export function expiresWithin(pem: string, marginDays: number, now = new Date()): boolean {
  return describeCertificate(pem).notAfter.getTime() - now.getTime() < marginDays * DAY
}
