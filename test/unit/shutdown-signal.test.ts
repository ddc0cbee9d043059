// `mirrorhook serve` as a child process, as a kubelet stops it: SIGTERM while clients keep
// keep-alive connections open (the API server keeps idle ones for 90 s). The process must
// close them, answer what is in flight, run its final steps and exit on its own.
import t from 'tap'
import { once } from 'node:events'
import { Agent as HttpAgent, request as httpRequest } from 'node:http'
import { Agent as HttpsAgent } from 'node:https'
import { podReview, until } from '../support/helpers.js'
import { postInFlight, postReview, startServe } from '../support/serve.js'

t.test('SIGTERM with keep-alive connections open: they are closed, final steps run, the process exits', async (t) => {
  // Probes off: nothing may leave loopback. Only keys every version of the configuration knows.
  const serve = await startServe(t, { config: { reachability: { probes: { enabled: false } } } })
  const { port, metricsPort, ca } = serve

  // A keep-alive client on each port, each holding an idle connection after one answer.
  const https = new HttpsAgent({ keepAlive: true, ca })
  const http = new HttpAgent({ keepAlive: true })
  t.teardown(() => {
    https.destroy()
    http.destroy()
  })
  const review = JSON.stringify(podReview('sigterm-1', ['nginx:1.25']))
  const answer = await postReview(port, https, review)
  t.strictSame([answer.status, answer.connection], [200, 'keep-alive'])
  await new Promise<void>((resolve, reject) =>
    httpRequest({ host: '127.0.0.1', port: metricsPort, path: '/metrics', agent: http }, (res) => res.resume().on('end', resolve))
      .on('error', reject)
      .end(),
  )
  const idle = [...Object.values(https.freeSockets).flat(), ...Object.values(http.freeSockets).flat()]
  t.equal(idle.length, 2, 'one idle keep-alive connection per port')
  const closedByServer = idle.map((s) => once(s!, 'close'))

  // A review in flight on another keep-alive connection (open before SIGTERM): its body is not complete at SIGTERM.
  const second = new HttpsAgent({ keepAlive: true, ca })
  t.teardown(() => second.destroy())
  const inFlight = postInFlight(port, second, review, serve.logged('shutting down'))
  closedByServer.push(once(await inFlight.connected, 'close'))

  serve.child.kill('SIGTERM')
  const answered = await inFlight.answered
  t.strictSame(
    { status: answered.status, connection: answered.connection, uid: JSON.parse(answered.body).response.uid },
    { status: 200, connection: 'close', uid: 'sigterm-1' },
    'the in-flight review is answered, and its connection closed',
  )
  let closed = 0
  for (const c of closedByServer) void c.then(() => closed++)
  // Well below the 95 s idle timeout that would close them anyway.
  await until('the server to close every connection', async () => (closed === 3 ? true : undefined), 30_000)
  t.pass('the server closed every connection, none of the clients hung up')
  const [code, signal] = await serve.exit()
  t.equal(signal, null, serve.stderr())
  t.equal(code, 0, 'exits cleanly on its own')
  t.equal(
    serve.lines.filter((l) => l.msg === 'shutdown: reachability stop done').length,
    1,
    'the reachability component was stopped (without a cluster there is no state to write)',
  )
  t.strictSame(serve.lines.find((l) => l.msg === 'stopped')?.steps, ['reachability stop: done'], 'the final steps ran, then it stopped')
})
