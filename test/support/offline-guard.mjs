// Loopback only: loaded into every test process (tap's node-arg) and, through NODE_OPTIONS,
// into every Node.js process a test starts (the CLI, npm, the built image's entrypoint).
//
// A connection to anything but 127.0.0.0/8 or ::1, and a DNS query for any name but
// `localhost`, is refused with an error naming the target, written to stderr at once, and
// the process exits non-zero, so tap fails the file even when the code under test swallows
// the error (a registry probe counts a refused connection as "unreachable").
//
// Unix sockets, and connections through a custom `lookup` that resolves to loopback (tests
// serving a registry name on 127.0.0.1), are allowed. Processes that are not Node.js
// (kube-apiserver, etcd, helm) are not covered here: CI runs the suite in a network
// namespace that has nothing but `lo` (.ci/run).
import dns from 'node:dns'
import { syncBuiltinESMExports } from 'node:module'
import net from 'node:net'

const GUARD = Symbol.for('mirrorhook.offline-guard')

if (!globalThis[GUARD]) {
  globalThis[GUARD] = true
  const refused = []

  const isLoopbackAddress = (address) => {
    const a = String(address)
      .toLowerCase()
      .replace(/^\[|\]$/g, '')
    if (net.isIPv4(a)) return a.startsWith('127.')
    if (net.isIPv6(a)) return a === '::1' || a === '0:0:0:0:0:0:0:1' || /^::ffff:127\./.test(a)
    return false
  }
  const isLoopbackName = (host) => /^(localhost|[^/]*\.localhost)\.?$/i.test(String(host))

  const refuse = (what) => {
    const message = `offline guard: refused ${what}: tests may only reach loopback (127.0.0.0/8, ::1) (test/support/offline-guard.mjs)`
    refused.push(message)
    process.stderr.write(`\n*** ${message}\n${new Error('attempted here').stack?.split('\n').slice(1, 12).join('\n')}\n`)
    return Object.assign(new Error(message), { code: 'ECONNREFUSED' })
  }

  process.on('exit', (code) => {
    if (refused.length === 0) return
    process.stderr.write(`\n*** offline guard: ${refused.length} non-loopback attempt(s) in pid ${process.pid}; failing the process\n`)
    if (!code) process.exitCode = 1
  })

  const checkResult = (host, result) => {
    const addresses = Array.isArray(result) ? result.map((r) => (typeof r === 'string' ? r : r.address)) : [result]
    const bad = addresses.find((a) => !isLoopbackAddress(a))
    return bad === undefined ? undefined : refuse(`a connection to ${host} (resolved to ${bad})`)
  }

  // DNS: only IP literals and localhost names are resolved; anything else would query the network.
  const originalLookup = dns.lookup
  const guardedLookup = function lookup(hostname, options, callback) {
    const cb = typeof options === 'function' ? options : callback
    if (!net.isIP(String(hostname).replace(/^\[|\]$/g, '')) && !isLoopbackName(hostname) && hostname) {
      const error = refuse(`a DNS lookup of ${hostname}`)
      process.nextTick(() => cb(Object.assign(error, { code: 'ENOTFOUND', hostname })))
      return {}
    }
    return originalLookup.call(this, hostname, options, callback)
  }
  dns.lookup = guardedLookup
  const originalPromisesLookup = dns.promises.lookup
  dns.promises.lookup = async function lookup(hostname, options) {
    if (!net.isIP(String(hostname).replace(/^\[|\]$/g, '')) && !isLoopbackName(hostname) && hostname) {
      throw Object.assign(refuse(`a DNS lookup of ${hostname}`), { code: 'ENOTFOUND', hostname })
    }
    return originalPromisesLookup.call(this, hostname, options)
  }
  for (const name of Object.keys(dns)) {
    if (!/^resolve/.test(name) || typeof dns[name] !== 'function') continue
    dns[name] = function (hostname, ...rest) {
      const error = refuse(`a DNS query (${name}) for ${hostname}`)
      const cb = rest.at(-1)
      if (typeof cb === 'function') process.nextTick(() => cb(error))
      else throw error
    }
  }
  for (const name of Object.keys(dns.promises)) {
    if (!/^resolve/.test(name) || typeof dns.promises[name] !== 'function') continue
    dns.promises[name] = async function (hostname) {
      throw refuse(`a DNS query (${name}) for ${hostname}`)
    }
  }

  // Connections: an IP target must be loopback; a name goes through a lookup whose answer must be.
  const originalConnect = net.Socket.prototype.connect
  net.Socket.prototype.connect = function connect(...args) {
    const normalized = Array.isArray(args[0]) ? args[0] : net._normalizeArgs(args)
    const options = normalized[0] ?? {}
    if (options.path === undefined && options.socket === undefined) {
      const host = String(options.host ?? 'localhost').replace(/^\[|\]$/g, '')
      if (net.isIP(host)) {
        if (!isLoopbackAddress(host)) {
          const error = refuse(`a connection to ${host}:${options.port}`)
          process.nextTick(() => this.destroy(error))
          return this
        }
      } else {
        const inner = options.lookup ?? dns.lookup
        options.lookup = function checkedLookup(hostname, lookupOptions, callback) {
          return inner.call(this, hostname, lookupOptions, (error, address, family) => {
            if (error) return callback(error, address, family)
            const bad = checkResult(`${hostname}:${options.port}`, address)
            return bad ? callback(bad) : callback(error, address, family)
          })
        }
      }
    }
    return originalConnect.call(this, normalized)
  }

  // `import { lookup } from 'node:dns'` in the code under test sees the guarded functions too.
  syncBuiltinESMExports()

  // Node.js processes the tests start inherit the guard.
  const self = `--import=${import.meta.url}`
  if (!(process.env.NODE_OPTIONS ?? '').includes(self)) {
    process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} ${self}`.trim()
  }
  // ...but not tap's process-info hook when coverage is off: it records every module each
  // process loads, for coverage only, and costs a Node.js process about 1.5 s of CPU to start
  // the CLI (the tests start hundreds).
  if (process.env.TAP_DISABLE_COVERAGE === '1') {
    process.env.NODE_OPTIONS = process.env.NODE_OPTIONS.split(/\s+/)
      .filter((arg) => !/^"?--(import|loader)=\S*@tapjs[\\/]processinfo[\\/]/.test(arg))
      .join(' ')
  }
}
