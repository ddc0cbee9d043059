// The certificate sources' check of a pair, driven one check at a time (no watcher, no timer).
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { SecureContextOptions } from 'node:tls'
import { createCa, issueServing } from '../../server/tls/certs.js'
import { CertificateReloader, readKeyPair } from '../../server/tls/reloader.js'
import { DynamicCertificateSource } from '../../server/tls/dynamic-source.js'

const ca = await createCa('test CA', 30)
const first = await issueServing(ca, { dnsNames: ['localhost'], validDays: 30 })
const second = await issueServing(ca, { dnsNames: ['localhost'], validDays: 30 })

function recorder() {
  const contexts: SecureContextOptions[] = []
  const events: string[] = []
  return {
    contexts,
    events,
    target: { setSecureContext: (o: SecureContextOptions) => void contexts.push(o) },
    handlers: { onReload: () => void events.push('reload'), onError: (e: Error) => void events.push(`error: ${e.message}`) },
  }
}

t.test('a file caught between truncation and write is not a pair', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mirrorhook-reloader-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const certFile = join(dir, 'tls.crt')
  const keyFile = join(dir, 'tls.key')
  await writeFile(certFile, first.certPem)
  await writeFile(keyFile, first.keyPem)
  const r = recorder()
  const reloader = new CertificateReloader(certFile, keyFile, { cert: first.certPem, key: first.keyPem }, r.target, r.handlers)

  await writeFile(certFile, '')
  await t.rejects(readKeyPair(certFile, keyFile), { message: 'the certificate is empty' })
  t.equal(await reloader.check(), false, 'an empty certificate file is not swapped in')
  await writeFile(certFile, second.certPem)
  await writeFile(keyFile, '')
  await t.rejects(readKeyPair(certFile, keyFile), { message: 'the key is empty' })
  t.equal(await reloader.check(), false, 'an empty key file is not swapped in')
  await writeFile(keyFile, '\n')
  t.equal(await reloader.check(), false, 'nor a key file holding only a line break')
  t.same(r.contexts, [], 'the served context is untouched')
  t.strictSame(reloader.keyPair, { cert: first.certPem, key: first.keyPem })

  await writeFile(keyFile, second.keyPem)
  t.equal(await reloader.check(), true, 'the complete pair is swapped in')
  t.equal(await reloader.check(), false, 'once')
  t.equal(r.contexts.length, 1)
  t.equal(r.contexts[0]?.cert, second.certPem)
  t.equal(r.contexts[0]?.key, second.keyPem)
  t.strictSame(r.events, ['error: the certificate is empty', 'error: the key is empty', 'error: the key is empty', 'reload'])
})

t.test('the in-memory source refuses an empty certificate or key', async (t) => {
  const r = recorder()
  const source = new DynamicCertificateSource({ cert: first.certPem, key: first.keyPem }, r.target, r.handlers)
  t.equal(source.set({ cert: '', key: second.keyPem }), false)
  t.equal(source.set({ cert: second.certPem, key: '' }), false)
  t.same(r.contexts, [])
  t.equal(source.set({ cert: second.certPem, key: second.keyPem }), true)
  t.equal(r.contexts.length, 1)
  t.strictSame(source.keyPair, { cert: second.certPem, key: second.keyPem })
  t.strictSame(r.events, ['error: the certificate is empty', 'error: the key is empty', 'reload'])
})
