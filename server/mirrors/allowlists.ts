// The mirrors' allowlists, kept in memory for admission: files are read at start and again when
// they change (a mounted ConfigMap included), https URLs are fetched on a schedule with a timeout
// and a size cap. A failed read keeps the last good list. Admission only reads the compiled lists.
import { readFile, stat } from 'node:fs/promises'
import https from 'node:https'
import { rootCertificates } from 'node:tls'
import { HttpsProxyAgent } from 'hpagent'
import { type Logger, pino } from 'pino'
import { type AllowlistLookup, type LoadedAllowlist, parseAllowlist, withAllowlists } from '../core/allowlist.js'
import type { ReachabilityView } from '../core/rewrite.js'
import { describeError, proxySettings } from '../reachability/probe.js'

export interface AllowlistStoreOptions {
  // repoPrefix → file path or https URL (Policy.allowlists).
  readonly sources: ReadonlyMap<string, string>
  readonly logger: Logger
  // Extra CA certificates (PEM) trusted for https sources, besides Node's bundle.
  readonly ca?: string
  readonly env?: NodeJS.ProcessEnv
  // How often a file is checked for a change.
  readonly fileCheckMs?: number
  // How often a URL is fetched again, and sooner after a failure.
  readonly urlRefreshMs?: number
  readonly urlRetryMs?: number
  readonly timeoutMs?: number
  // A bigger list is refused (DaoCloud's is about 20 KiB).
  readonly maxBytes?: number
  readonly now?: () => number
}

export const ALLOWLIST_DEFAULTS = {
  fileCheckMs: 10_000,
  urlRefreshMs: 3_600_000,
  urlRetryMs: 300_000,
  timeoutMs: 10_000,
  maxBytes: 4 * 1024 * 1024,
}

/** What `mirrorhook state` shows of one list. */
export interface AllowlistStatus {
  readonly source: string
  readonly mirrors: readonly string[]
  // Patterns in the list in use; undefined while none could be read yet.
  readonly patterns?: number
  readonly bytes?: number
  // Lines that are not patterns (ignored).
  readonly ignoredLines?: number
  readonly loadedAt?: string
  readonly checkedAt?: string
  // The latest read that failed (the last good list stays in use).
  readonly error?: string
}

interface SourceState {
  readonly source: string
  readonly url: boolean
  readonly mirrors: string[]
  loaded?: LoadedAllowlist
  bytes?: number
  ignored?: number
  loadedAt?: number
  checkedAt?: number
  error?: string
  stamp?: string
  timer?: NodeJS.Timeout
  running?: Promise<void>
}

class TooLarge extends Error {}

function fetchText(url: string, options: { ca?: string; env: NodeJS.ProcessEnv; timeoutMs: number; maxBytes: number }): Promise<string> {
  const ca = options.ca ? [...rootCertificates, options.ca] : undefined
  const proxy = proxySettings(options.env)
  const target = new URL(url)
  const host = target.port ? `${target.hostname}:${target.port}` : target.hostname
  const agent =
    proxy.proxy && !proxy.noProxy.match(host).excluded
      ? new HttpsProxyAgent({ proxy: proxy.proxy, ca: ca as never, keepAlive: false, timeout: options.timeoutMs })
      : undefined
  return new Promise<string>((resolve, reject) => {
    const signal = AbortSignal.timeout(options.timeoutMs)
    const req = https.request(target, {
      method: 'GET',
      agent: agent ?? false,
      ca: agent ? undefined : ca,
      signal,
      headers: { 'user-agent': 'mirrorhook' },
    })
    req.on('response', (res) => {
      const status = res.statusCode ?? 0
      if (status !== 200) {
        res.resume()
        reject(new Error(`HTTP ${status}${res.headers.location ? ` (redirect to ${res.headers.location} not followed)` : ''}`))
        return
      }
      const declared = Number(res.headers['content-length'] ?? 0)
      if (declared > options.maxBytes) {
        res.destroy()
        reject(new TooLarge(`larger than ${options.maxBytes} bytes (${declared})`))
        return
      }
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > options.maxBytes) {
          res.destroy()
          reject(new TooLarge(`larger than ${options.maxBytes} bytes`))
          return
        }
        chunks.push(chunk)
      })
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
      res.on('error', reject)
    })
    req.on('error', (error: NodeJS.ErrnoException) => {
      reject(signal.aborted ? new Error(`no answer within ${options.timeoutMs} ms`) : new Error(describeError(error, options.timeoutMs)))
    })
    req.end()
  }).finally(() => agent?.destroy())
}

export class AllowlistStore implements AllowlistLookup {
  private readonly states = new Map<string, SourceState>()
  private readonly byMirror = new Map<string, SourceState>()
  private readonly settings: typeof ALLOWLIST_DEFAULTS
  private readonly now: () => number
  private changes = 0
  private stopped = false

  constructor(private readonly options: AllowlistStoreOptions) {
    this.settings = {
      fileCheckMs: options.fileCheckMs ?? ALLOWLIST_DEFAULTS.fileCheckMs,
      urlRefreshMs: options.urlRefreshMs ?? ALLOWLIST_DEFAULTS.urlRefreshMs,
      urlRetryMs: options.urlRetryMs ?? ALLOWLIST_DEFAULTS.urlRetryMs,
      timeoutMs: options.timeoutMs ?? ALLOWLIST_DEFAULTS.timeoutMs,
      maxBytes: options.maxBytes ?? ALLOWLIST_DEFAULTS.maxBytes,
    }
    this.now = options.now ?? Date.now
    for (const [mirror, source] of options.sources) {
      let state = this.states.get(source)
      if (!state) this.states.set(source, (state = { source, url: /^https:\/\//i.test(source), mirrors: [] }))
      state.mirrors.push(mirror)
      this.byMirror.set(mirror, state)
    }
  }

  get version(): number {
    return this.changes
  }

  get(repoPrefix: string): LoadedAllowlist | undefined {
    return this.byMirror.get(repoPrefix)?.loaded
  }

  /** Reads every list once (waiting at most `waitMs`; slower ones land later), then keeps them current. */
  async start(waitMs = 5000): Promise<void> {
    const first = Promise.all([...this.states.values()].map((s) => this.refresh(s)))
    let timer: NodeJS.Timeout | undefined
    await Promise.race([first, new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)))])
    clearTimeout(timer)
    void first.then(() => {
      for (const s of this.states.values()) this.schedule(s)
    })
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const s of this.states.values()) clearTimeout(s.timer)
    await Promise.all([...this.states.values()].map((s) => s.running))
  }

  /** Reads every list now (tests, `mirrorhook rewrite`); resolves when all are done. */
  async refreshAll(): Promise<void> {
    await Promise.all([...this.states.values()].map((s) => this.refresh(s)))
  }

  status(): AllowlistStatus[] {
    const iso = (ms: number | undefined) => (ms === undefined ? undefined : new Date(ms).toISOString())
    return [...this.states.values()].map((s) => ({
      source: s.source,
      mirrors: [...s.mirrors],
      patterns: s.loaded?.list.patterns,
      bytes: s.bytes,
      ignoredLines: s.ignored,
      loadedAt: iso(s.loadedAt),
      checkedAt: iso(s.checkedAt),
      error: s.error,
    }))
  }

  private schedule(s: SourceState): void {
    if (this.stopped) return
    const delay = s.url ? (s.error && !s.loaded ? this.settings.urlRetryMs : this.settings.urlRefreshMs) : this.settings.fileCheckMs
    s.timer = setTimeout(() => {
      void this.refresh(s).finally(() => this.schedule(s))
    }, delay)
    s.timer.unref?.()
  }

  private refresh(s: SourceState): Promise<void> {
    s.running ??= this.read(s).finally(() => (s.running = undefined))
    return s.running
  }

  private async read(s: SourceState): Promise<void> {
    const { logger } = this.options
    try {
      let text: string
      if (s.url) {
        text = await fetchText(s.source, {
          ca: this.options.ca,
          env: this.options.env ?? process.env,
          timeoutMs: this.settings.timeoutMs,
          maxBytes: this.settings.maxBytes,
        })
      } else {
        const info = await stat(s.source)
        const stamp = `${info.mtimeMs}:${info.size}:${info.ino}`
        s.checkedAt = this.now()
        if (stamp === s.stamp && s.loaded) return
        if (info.size > this.settings.maxBytes) throw new TooLarge(`larger than ${this.settings.maxBytes} bytes (${info.size})`)
        text = await readFile(s.source, 'utf8')
        s.stamp = stamp
      }
      const bytes = Buffer.byteLength(text)
      if (bytes > this.settings.maxBytes) throw new TooLarge(`larger than ${this.settings.maxBytes} bytes`)
      const { list, ignored } = parseAllowlist(text)
      if (list.patterns === 0) throw new Error('no patterns in it')
      s.checkedAt = this.now()
      s.error = undefined
      s.loaded = { list, source: s.source }
      s.bytes = bytes
      s.ignored = ignored.length
      s.loadedAt = this.now()
      this.changes += 1
      logger.info(
        { source: s.source, mirrors: s.mirrors, patterns: list.patterns, ignoredLines: ignored.length },
        'mirror allowlist loaded',
      )
      if (ignored.length > 0)
        logger.warn({ source: s.source, ignored: ignored.slice(0, 5) }, 'allowlist lines that are not patterns were ignored')
    } catch (error) {
      const e = error as NodeJS.ErrnoException
      const message = e.code === 'ENOENT' ? 'no such file' : e.code ? `${e.code}: ${e.message}` : e.message
      s.checkedAt = this.now()
      const first = s.error !== message
      s.error = message
      if (first) {
        logger.warn(
          { source: s.source, mirrors: s.mirrors, err: message, keeping: s.loaded ? `${s.loaded.list.patterns} patterns` : 'no list' },
          s.loaded
            ? 'cannot read a mirror allowlist; keeping the last good one'
            : 'cannot read a mirror allowlist; its mirror gets every image until it can',
        )
      }
    }
  }
}

/**
 * For the commands that decide once (`mirrorhook rewrite`, `dry-run`): `base` with the mirrors'
 * lists read now; a list that cannot be read is reported through `warn` and left out.
 */
export async function withAllowlistsOnce(
  policy: { allowlists: ReadonlyMap<string, string>; config: { reachability?: { probes?: { caFile?: string } } } },
  base: ReachabilityView,
  warn: (line: string) => void,
): Promise<ReachabilityView> {
  if (policy.allowlists.size === 0) return base
  const caFile = policy.config.reachability?.probes?.caFile
  const store = new AllowlistStore({
    sources: policy.allowlists,
    logger: pino({ level: 'silent' }),
    ca: caFile ? await readFile(caFile, 'utf8') : undefined,
  })
  await store.refreshAll()
  for (const s of store.status()) if (s.error) warn(`allowlist ${s.source} (${s.mirrors.join(', ')}) not used: ${s.error}`)
  return withAllowlists(base, store)
}
