// What one review writes to the log: one compact line per mutated review, bounded whatever the Pod.
import t from 'tap'
import { mkdtempSync, openSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { resolveConfig } from '../../server/config/config.js'
import { compilePolicy } from '../../server/core/policy.js'
import { LOG_MAX_IMAGES } from '../../server/http/plugins/mutate.js'
import { logStats, stdoutDestination, unwritten } from '../../server/observability/logger.js'
import { podCreateReview } from '../support/helpers.js'
import { staticWebhookApp } from '../support/webhook-app.js'

async function harness(level = 'info') {
  const lines: string[] = []
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...String(chunk).split('\n').filter(Boolean))
      cb()
    },
  })
  const policy = compilePolicy(resolveConfig(undefined, {}))
  const app = await staticWebhookApp(policy, { logger: pino({ level, base: undefined }, sink) })
  return { app, lines }
}

function review(containers: unknown[], uid = 'u-1') {
  return podCreateReview(uid, { metadata: { generateName: 'web-7d9f-' }, spec: { containers } })
}

t.test('a mutated review: one line with the uid, the Pod and per image only what changed', async (t) => {
  const { app, lines } = await harness()
  t.teardown(() => app.close())
  const containers = [
    { name: 'web', image: 'nginx:1.25' },
    { name: 'internal', image: 'harbor.corp.example/team/api:2.1' },
    { name: 'bad', image: 'Nginx:1' },
  ]
  await app.inject({ method: 'POST', url: '/mutate', payload: review(containers) })
  t.equal(lines.length, 1)
  const { time, ...line } = JSON.parse(lines[0]!)
  t.type(time, 'number')
  t.strictSame(line, {
    level: 30,
    uid: 'u-1',
    namespace: 'shop',
    pod: 'web-7d9f-*',
    operation: 'CREATE',
    dryRun: false,
    outcome: 'mutated',
    rewritten: { web: 'm.daocloud.io/docker.io/library/nginx:1.25' },
    kept: { bad: 'unparseable: invalid image reference: invalid reference format: repository name (library/Nginx) must be lowercase' },
    msg: 'admission decided',
  })
})

t.test('a review with nothing to rewrite writes nothing at the default level', async (t) => {
  const { app, lines } = await harness()
  t.teardown(() => app.close())
  await app.inject({ method: 'POST', url: '/mutate', payload: review([{ name: 'internal', image: 'harbor.corp.example/team/api:2.1' }]) })
  t.strictSame(lines, [])
})

t.test('a hostile Pod cannot produce a huge log line', async (t) => {
  const { app, lines } = await harness()
  t.teardown(() => app.close())
  const longPath = `${'a'.repeat(120)}/${'b'.repeat(120)}`
  // Under the 6 MiB body limit: 1,000 containers with 1,000-character names, half of them with
  // valid 380-character references, half with invalid 3,000-character ones.
  const containers = Array.from({ length: 1000 }, (_, i) => ({
    name: `${i}-${'n'.repeat(1000)}`,
    image: i % 2 === 0 ? `ghcr.io/${longPath}:${'t'.repeat(120)}` : `${'X'.repeat(3000)}:${i}`,
  }))
  const body = review(containers, 'u'.repeat(10_000))
  const res = await app.inject({ method: 'POST', url: '/mutate', payload: body })
  t.equal(res.statusCode, 200)
  t.equal(lines.length, 1, 'one line for the review')
  const line = lines[0]!
  t.ok(line.length < 48 * 1024, `the line is ${line.length} characters for a ${JSON.stringify(body).length}-character review`)
  const parsed = JSON.parse(line)
  t.equal(parsed.more, 1000 - LOG_MAX_IMAGES, 'images beyond the limit are counted, not listed')
  t.equal(Object.keys(parsed.rewritten).length + Object.keys(parsed.kept).length, LOG_MAX_IMAGES)
  t.equal(parsed.uid, `${'u'.repeat(128)}…(10000 chars)`)
  for (const value of [
    ...Object.keys(parsed.rewritten),
    ...Object.values<string>(parsed.kept),
    ...Object.values<string>(parsed.rewritten),
  ]) {
    t.ok(value.length <= 256 + 20, `clipped: ${value.slice(0, 40)}… (${value.length})`)
  }
})

t.test('the log destination drops and counts lines instead of queueing without bound', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorhook-log-'))
  const file = join(dir, 'out.log')
  const fd = openSync(file, 'w')
  const before = logStats().droppedLines
  // 1 KiB queue, no batching: the first line starts a write, nine more fit, the rest are dropped.
  const destination = stdoutDestination(1000, fd, 0)
  await new Promise((resolve) => (destination as unknown as NodeJS.EventEmitter).once('ready', resolve))
  const line = `${'x'.repeat(99)}\n`
  for (let i = 0; i < 100; i++) destination.write(line)
  t.equal(logStats().queuedBytes, 1000, 'the queue stops at its bound')
  t.equal(logStats().droppedLines - before, 90)
  // end() writes what is queued, then closes the file.
  const closed = new Promise((resolve) => (destination as unknown as NodeJS.EventEmitter).once('close', resolve))
  ;(destination as unknown as { end(): void }).end()
  await closed
  t.equal(readFileSync(file, 'utf8'), line.repeat(10), 'what was accepted is written')
})

t.test('the log destination writes every accepted line once, in order, across reused batches', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorhook-log-'))
  const file = join(dir, 'out.log')
  const fd = openSync(file, 'w')
  // 64-byte batches: lines fill them, one overflows into the next, a long line gets a buffer of its own.
  const destination = stdoutDestination(1 << 20, fd, 64)
  await new Promise((resolve) => (destination as unknown as NodeJS.EventEmitter).once('ready', resolve))
  const lines = Array.from({ length: 200 }, (_, i) => (i % 37 === 0 ? `${'é'.repeat(50)}-${i}\n` : `line ${i} ${'ü'.repeat(i % 7)}\n`))
  lines.push(`${'x'.repeat(300)}\n`)
  for (const line of lines) {
    t.equal(destination.write(line), true)
    // Let writes complete now and then, so that batch buffers are reused while lines keep coming.
    if (lines.indexOf(line) % 25 === 0) await new Promise((resolve) => setImmediate(resolve))
  }
  const closed = new Promise((resolve) => (destination as unknown as NodeJS.EventEmitter).once('close', resolve))
  ;(destination as unknown as { end(): void }).end()
  await closed
  t.equal(readFileSync(file, 'utf8'), lines.join(''))
  t.equal(logStats().queuedBytes, 0, 'nothing left queued')
})

t.test('near its bound the destination counts a line by its UTF-8 bytes', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mirrorhook-log-'))
  const fd = openSync(join(dir, 'out.log'), 'w')
  const destination = stdoutDestination(100, fd, 1000)
  const before = logStats().droppedLines
  // Two bytes per 'é': 40 + 1 bytes each; the third does not fit in 100.
  const line = `${'é'.repeat(20)}\n`
  t.strictSame(
    [1, 2, 3].map(() => destination.write(line)),
    [true, true, false],
  )
  t.equal(logStats().queuedBytes, 82)
  t.equal(logStats().droppedLines - before, 1)
  ;(destination as unknown as { end(): void }).end()
})

t.test('after a short write, what is left of the batches is written next', async (t) => {
  const batches = [Buffer.from('abc'), Buffer.from('defg'), Buffer.from('h')]
  const cases: [number, string[]][] = [
    [0, ['abc', 'defg', 'h']],
    [2, ['c', 'defg', 'h']],
    [3, ['defg', 'h']],
    [5, ['fg', 'h']],
    [7, ['h']],
    [8, []],
  ]
  t.strictSame(
    cases.map(([written]) => unwritten(batches, written).map(String)),
    cases.map(([, rest]) => rest),
  )
  t.equal(unwritten(batches, 3)[0], batches[1], 'a batch not begun is kept as it is')
})
