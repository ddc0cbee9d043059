// Where the HTTPS server's certificate comes from, after cert-manager's pkg/server/tls
// (source.go): a source holds the pair served now and hands every new one to the server's
// secure context. Two sources: files reloaded when they change (reloader.ts, for
// `--tls-cert`/`--tls-key`, cert-manager and Secret volumes) and a pair handed over in memory
// (dynamic-source.ts, for the self-managed mode, which produces it in this process).
import type { KeyPair } from './reloader.js'

export interface CertificateSource {
  /** The pair served now. */
  readonly keyPair: KeyPair
  stop(): void
}
