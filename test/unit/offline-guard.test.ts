// The loopback-only guard every test process runs under (test/support/offline-guard.mjs):
// a non-loopback connection or DNS lookup fails the process loudly, loopback works, and
// Node.js processes a test starts inherit it.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'

// The guard's own lines in a child's stderr, without the stacks that follow them.
const headlines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('*** '))

function node(script: string): Promise<{ code: number | null; stderr: string; stdout: string; pid: number | undefined }> {
  return new Promise((resolve, reject) => {
    // The environment as a test's child gets it: NODE_OPTIONS carries the guard.
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr, pid: child.pid }))
  })
}

t.test('this process and its children run under the guard', async (t) => {
  // Other options (the environment's own) may stand beside it: the guard's import is there once, for this checkout's file.
  const guard = new URL('../support/offline-guard.mjs', import.meta.url).href
  t.strictSame(
    (process.env.NODE_OPTIONS ?? '').split(/\s+/).filter((arg) => arg.includes('offline-guard')),
    [`--import=${guard}`],
  )
})

t.test('a connection to a public address is refused and fails the process, even when the error is caught', async (t) => {
  // 192.0.2.1 is TEST-NET-1 (RFC 5737): nothing is sent, the guard refuses before connecting.
  const r = await node(`
    import net from 'node:net'
    const s = net.connect(443, '192.0.2.1')
    s.on('error', (e) => console.log('caught:', e.message))
  `)
  t.equal(r.code, 1, 'exit code 1 although the program handled the error')
  t.equal(
    r.stdout,
    'caught: offline guard: refused a connection to 192.0.2.1:443: tests may only reach loopback (127.0.0.0/8, ::1) (test/support/offline-guard.mjs)\n',
  )
  // Each refusal is followed by its stack (paths vary); the headline lines are exact, the pid is the child's.
  t.strictSame(headlines(r.stderr), [
    '*** offline guard: refused a connection to 192.0.2.1:443: tests may only reach loopback (127.0.0.0/8, ::1) (test/support/offline-guard.mjs)',
    `*** offline guard: 1 non-loopback attempt(s) in pid ${r.pid}; failing the process`,
  ])
})

t.test('DNS lookups of names other than localhost are refused, through fetch and node:dns alike', async (t) => {
  const r = await node(`
    import { lookup } from 'node:dns'
    import { promises } from 'node:dns'
    await fetch('https://registry.example.invalid/v2/').catch((e) => console.log('fetch:', e.cause.code))
    lookup('docker.io', (e) => console.log('lookup:', e.code))
    await promises.resolve4('quay.io').catch((e) => console.log('resolve4:', e.code))
  `)
  t.equal(r.code, 1)
  // The three calls run concurrently; their lines come in the order they end.
  t.strictSame(r.stdout.split('\n').sort(), ['', 'fetch: ENOTFOUND', 'lookup: ENOTFOUND', 'resolve4: ECONNREFUSED'])
  const suffix = ': tests may only reach loopback (127.0.0.0/8, ::1) (test/support/offline-guard.mjs)'
  t.strictSame(headlines(r.stderr).sort(), [
    `*** offline guard: 3 non-loopback attempt(s) in pid ${r.pid}; failing the process`,
    `*** offline guard: refused a DNS lookup of docker.io${suffix}`,
    `*** offline guard: refused a DNS lookup of registry.example.invalid${suffix}`,
    `*** offline guard: refused a DNS query (resolve4) for quay.io${suffix}`,
  ])
})

t.test('loopback by address and by the name localhost works', async (t) => {
  const server = createServer((s) => s.end('hello\n'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const port = (server.address() as { port: number }).port
  const r = await node(`
    import net from 'node:net'
    for (const host of ['127.0.0.1', 'localhost']) {
      const text = await new Promise((resolve, reject) => {
        let got = ''
        const s = net.connect({ port: ${port}, host, family: 4 }, () => undefined)
        s.on('data', (d) => (got += d))
        s.on('end', () => resolve(got))
        s.on('error', reject)
      })
      console.log(host, text.trim())
    }
  `)
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '127.0.0.1 hello\nlocalhost hello\n')
  t.equal(r.stderr, '')
})
