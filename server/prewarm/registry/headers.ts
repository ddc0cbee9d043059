// Pure parsers of the registry response headers the client acts on.

/**
 * The `rel="next"` target of a `Link` header (RFC 8288), as distribution sends it for tag
 * listing (`</v2/name/tags/list?last=x&n=100>; rel="next"`) and Harbor for its pages.
 */
export function nextLink(header: string | undefined): string | undefined {
  if (!header) return undefined
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>\s*((?:;\s*[^;]+)*)$/.exec(part)
    if (!m) continue
    const params = m[2]!.split(';').map((p) => p.trim())
    if (params.some((p) => /^rel\s*=\s*"?([^"]*)"?$/i.exec(p)?.[1]?.split(/\s+/).includes('next'))) return m[1]
  }
  return undefined
}

/** `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; milliseconds to wait, undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, nowMs: number): number | undefined {
  if (header === undefined) return undefined
  const s = header.trim()
  if (/^[0-9]+$/.test(s)) return Number(s) * 1000
  const at = Date.parse(s)
  if (Number.isNaN(at) || !/[a-z]/i.test(s)) return undefined
  return Math.max(0, at - nowMs)
}

export interface Challenge {
  /** Lower-case scheme: `bearer`, `basic`. */
  readonly scheme: string
  readonly params: Readonly<Record<string, string>>
}

/**
 * `WWW-Authenticate` challenges (RFC 9110 §11.6.1), e.g. distribution's
 * `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"`.
 * Parameter names are lower-cased; quoted values are unescaped.
 */
export function parseChallenges(header: string | undefined): Challenge[] {
  if (!header) return []
  const out: Challenge[] = []
  let i = 0
  const s = header
  const skipWs = () => {
    while (i < s.length && /[\s,]/.test(s[i]!)) i++
  }
  while (i < s.length) {
    skipWs()
    const scheme = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/.exec(s.slice(i))
    if (!scheme) break
    i += scheme[0].length
    const params: Record<string, string> = {}
    for (;;) {
      const save = i
      while (i < s.length && /[\s,]/.test(s[i]!)) i++
      const name = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*/.exec(s.slice(i))
      if (!name) {
        i = save
        break
      }
      i += name[0].length
      let value = ''
      if (s[i] === '"') {
        i++
        while (i < s.length && s[i] !== '"') {
          if (s[i] === '\\' && i + 1 < s.length) i++
          value += s[i]
          i++
        }
        i++
      } else {
        const tok = /^[^\s,]*/.exec(s.slice(i))![0]
        value = tok
        i += tok.length
      }
      params[name[1]!.toLowerCase()] = value
    }
    out.push({ scheme: scheme[0].toLowerCase(), params })
    // token68 form (`Basic abc==`) or junk: skip to the next comma.
    while (i < s.length && s[i] !== ',') i++
  }
  return out
}
