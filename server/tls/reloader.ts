// The file certificate source (source.ts; cert-manager's file_source.go): the serving
// certificate from files, swapped in place when the files change (cert-manager and kubelet
// Secret volumes replace them atomically through a symlink). Existing connections keep
// their session; new ones get the new pair.
import { watch, type FSWatcher } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import type { CertificateSource } from './source.js'

// TLS 1.2 suites: AEAD ciphers with ECDHE key exchange only (no CBC, no SHA-1 MACs, no static RSA,
// no finite-field DHE). Stricter than Go's defaults, which the API server uses as a client and
// which all include these suites; TLS 1.3 suites are all AEAD and stay at OpenSSL's defaults.
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
] as const

export const TLS_OPTIONS = {
  minVersion: 'TLSv1.2',
  ciphers: TLS12_CIPHERS.join(':'),
  honorCipherOrder: true,
} as const satisfies SecureContextOptions

export interface KeyPair {
  cert: string
  key: string
}

/**
 * Throws unless `pair` is a certificate with its matching key. createSecureContext alone lets an
 * empty certificate or key through (it sets only what is given): a file caught between being
 * truncated and written would then be served as a context without a certificate.
 */
export function checkKeyPair(pair: KeyPair): void {
  if (pair.cert.trim() === '') throw new Error('the certificate is empty')
  if (pair.key.trim() === '') throw new Error('the key is empty')
  // Throws when the key does not match the certificate or either is malformed.
  createSecureContext({ ...pair, ...TLS_OPTIONS })
}

export async function readKeyPair(certFile: string, keyFile: string): Promise<KeyPair> {
  const [cert, key] = await Promise.all([readFile(certFile, 'utf8'), readFile(keyFile, 'utf8')])
  checkKeyPair({ cert, key })
  return { cert, key }
}

export interface SecureContextTarget {
  setSecureContext(options: SecureContextOptions): void
}

export interface ReloaderEvents {
  onReload?: () => void
  onError?: (error: Error) => void
}

export class CertificateReloader implements CertificateSource {
  private current: KeyPair
  private timer?: NodeJS.Timeout
  private watchers: FSWatcher[] = []
  private checking = false
  private pending = false

  constructor(
    private readonly certFile: string,
    private readonly keyFile: string,
    initial: KeyPair,
    private readonly target: SecureContextTarget,
    private readonly events: ReloaderEvents = {},
  ) {
    this.current = initial
  }

  get keyPair(): KeyPair {
    return this.current
  }

  start(pollIntervalMs: number): void {
    this.timer = setInterval(() => void this.check(), pollIntervalMs)
    this.timer.unref()
    // Watching the folders catches symlink swaps at once; polling covers file systems without events.
    for (const dir of new Set([dirname(this.certFile), dirname(this.keyFile)])) {
      try {
        const w = watch(dir, () => void this.check())
        w.on('error', () => w.close())
        w.unref()
        this.watchers.push(w)
      } catch {
        // Polling still runs.
      }
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    for (const w of this.watchers) w.close()
    this.watchers = []
  }

  /** Reads the files and swaps the context when they changed and form a valid pair. */
  async check(): Promise<boolean> {
    if (this.checking) {
      this.pending = true
      return false
    }
    this.checking = true
    try {
      let next: KeyPair
      try {
        next = await readKeyPair(this.certFile, this.keyFile)
      } catch (error) {
        // A rotation writes the two files one after the other; a mismatch is retried on the next event.
        const [cert, key] = await Promise.all([
          readFile(this.certFile, 'utf8').catch(() => ''),
          readFile(this.keyFile, 'utf8').catch(() => ''),
        ])
        if (cert !== this.current.cert || key !== this.current.key) this.events.onError?.(error as Error)
        return false
      }
      if (next.cert === this.current.cert && next.key === this.current.key) return false
      this.target.setSecureContext({ ...next, ...TLS_OPTIONS })
      this.current = next
      this.events.onReload?.()
      return true
    } finally {
      this.checking = false
      if (this.pending) {
        this.pending = false
        setImmediate(() => void this.check())
      }
    }
  }
}
