// A certificate handed to the HTTPS server in memory, after cert-manager's
// dynamic_source.go: whoever produces the pair (the self-managed TLS loop) calls set(),
// with no file written and read back in between.
import { checkKeyPair, type KeyPair, type ReloaderEvents, type SecureContextTarget, TLS_OPTIONS } from './reloader.js'
import type { CertificateSource } from './source.js'

export class DynamicCertificateSource implements CertificateSource {
  private current: KeyPair

  constructor(
    initial: KeyPair,
    private readonly target: SecureContextTarget,
    private readonly events: ReloaderEvents = {},
  ) {
    this.current = initial
  }

  get keyPair(): KeyPair {
    return this.current
  }

  /** Serves `next` from the next handshake on; false when it is the pair served already or not a valid pair. */
  set(next: KeyPair): boolean {
    if (next.cert === this.current.cert && next.key === this.current.key) return false
    try {
      checkKeyPair(next)
    } catch (error) {
      this.events.onError?.(error as Error)
      return false
    }
    this.target.setSecureContext({ ...next, ...TLS_OPTIONS })
    this.current = next
    this.events.onReload?.()
    return true
  }

  stop(): void {}
}
