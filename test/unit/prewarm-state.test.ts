// The last pre-warm run as GET /state carries it and `mirrorhook state` prints it.
import t from 'tap'
import { formatState } from '../../server/reachability/cli.js'
import { snapshotSchema } from '../../server/reachability/snapshot.js'

const NOW = Date.parse('2030-11-29T20:00:00Z')
const base = { version: 1, writtenAt: '2030-11-29T19:59:00.000Z', registries: [], refusals: [] }
const run = {
  scheduledFor: '2030-11-29T19:00:00.000Z',
  startedAt: '2030-11-29T19:00:00.000Z',
  finishedAt: '2030-11-29T19:00:04.000Z',
  result: 'partial',
  by: 'mirrorhook-7d9f_1',
  namespaces: 1,
  workloads: 12,
  containers: 15,
  images: 20,
  newerTags: 4,
  keepUntil: '2030-11-30T20:00:00.000Z',
  registries: {
    'harbor.corp.example': { questions: 5, requests: 9, newer: 4, same: 1, errors: 0 },
    'registry.corp.example:5000': { questions: 3, requests: 0, newer: 0, same: 0, errors: 2, down: 'connect ECONNREFUSED' },
  },
}

t.test('the last run: parsed from /state and printed on one line', async (t) => {
  const snapshot = snapshotSchema.parse({ ...base, prewarm: run })
  t.equal(snapshot.prewarm?.result, 'partial')
  const text = formatState({ snapshot, source: 'http://127.0.0.1:9090/state' }, [], NOW)
  t.equal(
    text,
    [
      'no registry state known yet',
      '',
      'last pre-warm run: partial for 2030-11-29T19:00:00Z, finished 2030-11-29T19:00:04Z (60m ago): 12 workloads, 20 images, 4 newer tags; registries not answering: registry.corp.example:5000 (connect ECONNREFUSED)',
      '',
      'source: http://127.0.0.1:9090/state, written 2030-11-29T19:59:00.000Z',
      '',
    ].join('\n'),
  )
})

t.test('before the first run, and from a server without pre-warm', async (t) => {
  const none = formatState({ snapshot: snapshotSchema.parse({ ...base, prewarm: null }), source: 's' }, [], NOW)
  t.equal(none, 'no registry state known yet\n\nlast pre-warm run: none yet\n\nsource: s, written 2030-11-29T19:59:00.000Z\n')
  const off = formatState({ snapshot: snapshotSchema.parse(base), source: 's' }, [], NOW)
  t.equal(off, 'no registry state known yet\n\nsource: s, written 2030-11-29T19:59:00.000Z\n', 'no pre-warm line')
})
