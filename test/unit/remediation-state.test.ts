// `mirrorhook state` lists the recent remediations read from GET /state.
import t from 'tap'
import { formatState } from '../../server/reachability/cli.js'
import { parseSnapshot } from '../../server/reachability/snapshot.js'

t.test('recent remediations: one line each, with what changed or why nothing could be done', async (t) => {
  const now = Date.parse('2026-01-01T12:00:00Z')
  const snapshot = parseSnapshot(
    {
      version: 1,
      writtenAt: '2026-01-01T12:00:00.000Z',
      registries: [],
      refusals: [],
      remediations: [
        {
          at: '2026-01-01T11:59:30.000Z',
          namespace: 'shop',
          pod: 'web-1-abc',
          uid: 'u1',
          node: 'node01',
          owner: 'ReplicaSet/web-1',
          action: 'evict',
          result: 'success',
          changes: [{ container: 'web', from: 'nginx:1.25', to: 'm.daocloud.io/docker.io/library/nginx:1.25', cause: 'i/o timeout' }],
        },
        {
          at: '2026-01-01T11:58:00.000Z',
          namespace: 'shop',
          pod: 'typo-1-def',
          uid: 'u2',
          action: 'none',
          result: 'not-found',
          changes: [],
          reason: 'web: nginx:9.9 failed (not found): a mirror cannot serve an image that does not exist',
        },
      ],
    },
    'http://127.0.0.1:9090/state',
  )
  t.equal(
    formatState({ snapshot, source: 'http://127.0.0.1:9090/state' }, [], now),
    [
      'no registry state known yet',
      '',
      'REMEDIATED POD   WHEN                            ACTION  RESULT     DETAIL',
      'shop/web-1-abc   2026-01-01T11:59:30Z (30s ago)  evict   success    web: nginx:1.25 -> m.daocloud.io/docker.io/library/nginx:1.25 (i/o timeout)',
      'shop/typo-1-def  2026-01-01T11:58:00Z (2m ago)   none    not-found  web: nginx:9.9 failed (not found): a mirror cannot serve an image that does not exist',
      '',
      'source: http://127.0.0.1:9090/state, written 2026-01-01T12:00:00.000Z',
      '',
    ].join('\n'),
  )
})
