// Small PKI for tests: a throw-away CA and certificates it signs (ECDSA P-256),
// as PEM strings. Used for the kube-apiserver's serving certificate and usable
// for a webhook's serving certificate (SAN IP:127.0.0.1) whose CA goes into a
// MutatingWebhookConfiguration's caBundle.
import 'reflect-metadata';
import { webcrypto, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY = 24 * 3600 * 1000;

export interface CertificateAuthority {
  /** PEM of the CA certificate (what goes into a caBundle / certificate-authority-data). */
  certPem: string;
  /** PKCS#8 PEM of the CA key. */
  keyPem: string;
  /** Issue a certificate signed by this CA. */
  issue(opts: IssueOptions): Promise<IssuedCert>;
}

export interface IssueOptions {
  commonName: string;
  /** DNS names for the SAN. */
  dnsNames?: string[];
  /** IP addresses for the SAN (e.g. '127.0.0.1', '::1'). */
  ips?: string[];
  /** 'server' (default), 'client' or both. */
  usages?: Array<'server' | 'client'>;
  /** Organization (O=), e.g. a Kubernetes group for client certificates. */
  organization?: string;
  validDays?: number;
}

export interface IssuedCert {
  certPem: string;
  keyPem: string;
}

function pkcs8Pem(der: ArrayBuffer): string {
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function dn(cn: string, o?: string): string {
  const esc = (s: string) => s.replace(/([,+"\\<>;=])/g, '\\$1');
  return o ? `CN=${esc(cn)}, O=${esc(o)}` : `CN=${esc(cn)}`;
}

/** Create a fresh self-signed CA, valid for `validDays` (default 7) days. */
export async function createCertificateAuthority(commonName = 'mirrorhook-test-ca', validDays = 7): Promise<CertificateAuthority> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: dn(commonName),
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + validDays * DAY),
    signingAlgorithm: SIGN,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const keyPem = pkcs8Pem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const certPem = cert.toString('pem') + '\n';

  return {
    certPem,
    keyPem,
    async issue(opts: IssueOptions): Promise<IssuedCert> {
      const leaf = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair;
      const usages = opts.usages ?? ['server'];
      const eku: string[] = [];
      if (usages.includes('server')) eku.push(x509.ExtendedKeyUsage.serverAuth);
      if (usages.includes('client')) eku.push(x509.ExtendedKeyUsage.clientAuth);
      const san = [
        ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
        ...(opts.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
      ];
      const extensions: x509.Extension[] = [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension(eku),
        await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
      ];
      if (san.length) extensions.push(new x509.SubjectAlternativeNameExtension(san));
      const c = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerial(),
        subject: dn(opts.commonName, opts.organization),
        issuer: cert.subject,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + (opts.validDays ?? validDays) * DAY),
        signingAlgorithm: SIGN,
        publicKey: leaf.publicKey,
        signingKey: keys.privateKey,
        extensions,
      });
      return {
        certPem: c.toString('pem') + '\n',
        keyPem: pkcs8Pem(await webcrypto.subtle.exportKey('pkcs8', leaf.privateKey)),
      };
    },
  };
}

function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x01; // positive, non-zero leading byte
  return Buffer.from(b).toString('hex');
}

/** RSA 2048 key pair as PEM (PKCS#8 private, SPKI public), e.g. for service-account token signing. */
export function generateRsaKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** True when keyPem parses as a private key (sanity check used by the tests). */
export function isPrivateKeyPem(keyPem: string): boolean {
  try {
    createPrivateKey(keyPem);
    return true;
  } catch {
    return false;
  }
}
