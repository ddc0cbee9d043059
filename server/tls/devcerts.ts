// Development certificates: a CA and a serving certificate for localhost,
// generated once into a git-ignored folder and reused while still valid.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { createCa, describeCertificate, expiresWithin, issueServing } from './certs.js'

export const DEV_CERT_DIR = '.dev-certs'
const DNS_NAMES = ['localhost']
const IP_ADDRESSES = ['127.0.0.1', '::1']

export interface DevCertificates {
  dir: string
  caFile: string
  certFile: string
  keyFile: string
  generated: boolean
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch {
    return undefined
  }
}

function stillUsable(certPem: string | undefined): boolean {
  if (!certPem) return false
  try {
    const facts = describeCertificate(certPem)
    return !expiresWithin(certPem, 7) && DNS_NAMES.every((n) => facts.dnsNames.includes(n)) && facts.ipAddresses.includes('127.0.0.1')
  } catch {
    return false
  }
}

export async function ensureDevCertificates(dir = DEV_CERT_DIR): Promise<DevCertificates> {
  const abs = resolve(dir)
  const files = { caFile: join(abs, 'ca.crt'), certFile: join(abs, 'tls.crt'), keyFile: join(abs, 'tls.key') }
  const [ca, cert, key] = await Promise.all([readIfPresent(files.caFile), readIfPresent(files.certFile), readIfPresent(files.keyFile)])
  if (ca && key && stillUsable(cert)) return { dir: abs, ...files, generated: false }

  await mkdir(abs, { recursive: true, mode: 0o700 })
  const authority = await createCa('mirrorhook development CA', 365)
  const serving = await issueServing(authority, { dnsNames: DNS_NAMES, ipAddresses: IP_ADDRESSES, validDays: 365 })
  await writeFile(files.caFile, authority.certPem)
  await writeFile(join(abs, 'ca.key'), authority.keyPem, { mode: 0o600 })
  await writeFile(files.keyFile, serving.keyPem, { mode: 0o600 })
  await writeFile(files.certFile, serving.certPem)
  return { dir: abs, ...files, generated: true }
}
