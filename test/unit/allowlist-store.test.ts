// The allowlists as the server keeps them: a file read at start and again when it changes, an
// https URL fetched with a timeout and a size cap, the last good list kept when a read fails.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import t from 'tap'
import { pino } from 'pino'
import { withAllowlists } from '../../server/core/allowlist.js'
import { AllowlistStore } from '../../server/mirrors/allowlists.js'
import { createCa, issueServing } from '../../server/tls/certs.js'
import { until } from '../support/helpers.js'

const logger = pino({ level: 'silent' })
const M = 'm.daocloud.io'

// status() with its wall-clock times (loadedAt, checkedAt) written as '<time>' once seen to be ISO times.
function timesMasked(status: readonly object[]): object[] {
  const mask = (v: unknown) => (typeof v === 'string' && new Date(v).toISOString() === v ? '<time>' : v)
  return status.map((s) => Object.fromEntries(Object.entries(s).map(([k, v]) => [k, k === 'loadedAt' || k === 'checkedAt' ? mask(v) : v])))
}

t.test('a file: read at start, again when it changes; a bad read keeps the last good list', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-allowlist-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'allows.txt')
  writeFileSync(file, 'docker.io/library/nginx\ngcr.io/**\n')
  const store = new AllowlistStore({ sources: new Map([[M, file]]), logger, fileCheckMs: 20 })
  t.teardown(() => store.stop())
  await store.start()
  t.equal(store.get(M)?.list.patterns, 2)
  t.equal(store.get(M)?.source, file)
  t.equal(store.get('other.example'), undefined)
  t.equal(store.get(M)?.list.allows('docker.io/acme/app'), false)
  const v1 = store.version

  writeFileSync(file, 'docker.io/library/nginx\ngcr.io/**\ndocker.io/acme/*\n')
  await until('the changed file read', async () => (store.version > v1 ? true : undefined), 5000)
  t.equal(store.get(M)?.list.patterns, 3)
  t.equal(store.get(M)?.list.allows('docker.io/acme/app'), true)
  const v2 = store.version

  writeFileSync(file, '\n')
  await until('the empty file noticed', async () => (store.status()[0]?.error ? true : undefined), 5000)
  t.equal(store.version, v2, 'no new list')
  t.equal(store.get(M)?.list.patterns, 3, 'the last good list stays')
  t.strictSame(timesMasked(store.status()), [
    {
      source: file,
      mirrors: [M],
      patterns: 3,
      bytes: 51,
      ignoredLines: 0,
      loadedAt: '<time>',
      checkedAt: '<time>',
      error: 'no patterns in it',
    },
  ])

  rmSync(file)
  await until('the missing file noticed', async () => (store.status()[0]?.error === 'no such file' ? true : undefined), 5000)
  t.equal(store.get(M)?.list.patterns, 3, 'still the last good list')
})

t.test('a missing file at start: no list (every repository), said in the status', async (t) => {
  const store = new AllowlistStore({ sources: new Map([[M, '/nonexistent/allows.txt']]), logger })
  await store.start()
  await store.stop()
  t.equal(store.get(M), undefined)
  t.strictSame(timesMasked(store.status()), [
    {
      source: '/nonexistent/allows.txt',
      mirrors: [M],
      patterns: undefined,
      bytes: undefined,
      ignoredLines: undefined,
      loadedAt: undefined,
      checkedAt: '<time>',
      error: 'no such file',
    },
  ])
})

t.test('an https URL: fetched with the configured CA, a timeout and a size cap', async (t) => {
  const ca = await createCa('allowlist-test-ca', 1)
  const serving = await issueServing(ca, { dnsNames: ['localhost'], ipAddresses: ['127.0.0.1'], validDays: 1 })
  let answer: { status: number; body: string; length?: boolean } | 'hang' = { status: 200, body: 'quay.io/prometheus/*\n' }
  const server = https.createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
    if (answer === 'hang') return
    // Chunked, unless told the length: the cap holds either way.
    res.writeHead(answer.status, { 'content-type': 'text/plain', ...(answer.length ? { 'content-length': answer.body.length } : {}) })
    res.end(answer.body)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/allows.txt`
  // A generous timeout where an answer comes (the machine may be loaded); a short one where none does.
  const store = new AllowlistStore({ sources: new Map([[M, url]]), logger, ca: ca.certPem, timeoutMs: 10_000, maxBytes: 1000, env: {} })
  await store.refreshAll()
  t.equal(store.get(M)?.list.patterns, 1)
  t.equal(store.get(M)?.list.allows('quay.io/prometheus/node-exporter'), true)
  const loaded = { source: url, mirrors: [M], patterns: 1, bytes: 21, ignoredLines: 0, loadedAt: '<time>', checkedAt: '<time>' }
  const firstLoadedAt = store.status()[0]?.loadedAt

  answer = { status: 500, body: 'oops' }
  await store.refreshAll()
  t.strictSame(timesMasked(store.status()), [{ ...loaded, error: 'HTTP 500' }], 'a failed fetch keeps the last good list')
  t.equal(store.status()[0]?.loadedAt, firstLoadedAt, 'loaded when it was')

  answer = { status: 200, body: 'docker.io/library/nginx\n'.repeat(100) }
  await store.refreshAll()
  t.strictSame(timesMasked(store.status()), [{ ...loaded, error: 'larger than 1000 bytes' }])
  answer = { ...answer, length: true }
  await store.refreshAll()
  t.strictSame(timesMasked(store.status()), [{ ...loaded, error: 'larger than 1000 bytes (2400)' }], 'refused by its declared length')
  t.equal(store.status()[0]?.loadedAt, firstLoadedAt, 'still the first list')

  answer = 'hang'
  const impatient = new AllowlistStore({ sources: new Map([[M, url]]), logger, ca: ca.certPem, timeoutMs: 300, env: {} })
  await impatient.refreshAll()
  t.strictSame(timesMasked(impatient.status()), [
    {
      source: url,
      mirrors: [M],
      patterns: undefined,
      bytes: undefined,
      ignoredLines: undefined,
      loadedAt: undefined,
      checkedAt: '<time>',
      error: 'no answer within 300 ms',
    },
  ])

  answer = { status: 200, body: 'quay.io/**\n' }
  await store.refreshAll()
  t.strictSame(timesMasked(store.status()), [{ ...loaded, bytes: 11, error: undefined }])
  t.equal(store.get(M)?.list.allows('quay.io/acme/app'), true, 'the new list')

  const untrusting = new AllowlistStore({ sources: new Map([[M, url]]), logger, timeoutMs: 10_000, env: {} })
  await untrusting.refreshAll()
  t.strictSame(
    timesMasked(untrusting.status()),
    [
      {
        source: url,
        mirrors: [M],
        patterns: undefined,
        bytes: undefined,
        ignoredLines: undefined,
        loadedAt: undefined,
        checkedAt: '<time>',
        error: 'TLS: unable to verify the first certificate',
      },
    ],
    'without the CA the certificate is not trusted',
  )
})

t.test('the admission view changes generation when a list changes', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mirrorhook-allowlist-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'allows.txt')
  writeFileSync(file, 'gcr.io/**\n')
  const store = new AllowlistStore({ sources: new Map([[M, file]]), logger })
  await store.refreshAll()
  const view = withAllowlists({ generation: () => 1, status: () => ({ state: 'unknown', evidence: '' }) }, store)
  const g = view.generation!()
  t.equal(view.generation!(), g)
  t.equal(view.notAllowed!({ repoPrefix: M, domain: M }, 'gcr.io/a/b'), undefined)
  t.equal(
    view.notAllowed!({ repoPrefix: M, domain: M }, 'quay.io/a/b'),
    `quay.io/a/b is not on the allowlist of mirror ${M} (${file}, 1 patterns)`,
  )
  writeFileSync(file, 'gcr.io/**\nquay.io/**\n# a comment\n')
  await store.refreshAll()
  t.not(view.generation!(), g)
  t.equal(view.notAllowed!({ repoPrefix: M, domain: M }, 'quay.io/a/b'), undefined)
  t.equal(withAllowlists({ status: () => ({ state: 'unknown', evidence: '' }) }, store).generation, undefined, 'no memo without one below')
})
