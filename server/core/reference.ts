// Image references, parsed and normalised as the kubelet does (the Docker/OCI reference grammar):
//
//   reference     := name [ ":" tag ] [ "@" digest ]
//   name          := [ domain "/" ] path
//   domain        := host [ ":" port ]
//   host          := domain-name | IPv4 | "[" IPv6 "]"
//   domain-name   := domain-component [ "." domain-component ]*
//   path          := path-component [ "/" path-component ]*
//   path-component:= alphanumeric [ separator alphanumeric ]*
//   tag           := [\w][\w.-]{0,127}
//   digest        := algorithm ":" hex{32,}
//
// The expressions run on untrusted Pod specs, so they must not backtrack catastrophically. All are
// anchored, and neighbouring repetitions either use disjoint character classes or are split by a
// required ".", ":", "/" or "@", so a failing match revisits each character a bounded number of
// times: matching time is linear in the input length.

/** The components of a parsed reference. `name` is `domain/path` (`path` alone if `domain` is ''). */
export interface ImageReference {
  domain: string
  path: string
  tag?: string
  digest?: string
}

/** A bare digest (or 64-hex image ID), as `parseAnyReference` may return. */
export interface DigestReference {
  digest: string
}

export type ReferenceErrorCode =
  | 'invalid-format'
  | 'name-empty'
  | 'name-too-long'
  | 'name-not-canonical'
  | 'name-contains-uppercase'
  | 'name-is-identifier'
  | 'invalid-tag'
  | 'invalid-digest'
  | 'invalid-digest-length'
  | 'unsupported-digest'

export class ReferenceError extends Error {
  readonly code: ReferenceErrorCode
  constructor(code: ReferenceErrorCode, message: string) {
    super(message)
    this.name = 'ReferenceError'
    this.code = code
  }
}

/** Longest accepted path (the name without its domain). */
export const NAME_TOTAL_LENGTH_MAX = 255
/** Domain that familiar names such as `nginx` belong to. */
export const DEFAULT_DOMAIN = 'docker.io'
/** Old name of the Docker Hub domain, rewritten to `DEFAULT_DOMAIN`. */
export const LEGACY_DEFAULT_DOMAIN = 'index.docker.io'
/** Namespace of Docker Hub's official images: `nginx` is `library/nginx`. */
export const OFFICIAL_REPO_PREFIX = 'library/'
/** Tag assumed when a reference has neither tag nor digest. */
export const DEFAULT_TAG = 'latest'

// ---- grammar ---------------------------------------------------------------------------------

/** Path components are lowercase letters and digits only. */
const alphanumeric = '[a-z0-9]+'
/** Between alphanumerics: one period, one or two underscores, or any number of dashes. */
const separator = '(?:[._]|__|[-]+)'
/** A DNS label; uppercase is allowed in hosts, a dash may not start or end it. */
const domainNameComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])'
/** Dotted labels; also covers IPv4 addresses in decimal form. */
const domainName = `${domainNameComponent}(?:\\.${domainNameComponent})*`
/** IPv6 in brackets, compressed or not; zones (`%eth0`) and embedded IPv4 are excluded. */
const ipv6address = '\\[(?:[a-fA-F0-9:]+)\\]'
/** Registry host: a domain name or a bracketed IPv6 address. */
const host = `(?:${domainName}|${ipv6address})`
/** Any digits; the range is not checked, as in the grammar. */
const optionalPort = '(?::[0-9]+)?'
/** Registry host with an optional port. */
const domainAndPort = host + optionalPort
/** One slash-free piece of the repository path. */
const pathComponent = `${alphanumeric}(?:${separator}${alphanumeric})*`
/** The repository path, e.g. `library/ubuntu`. */
const remoteName = `${pathComponent}(?:/${pathComponent})*`
/** Optional domain followed by the path: what is left of a reference without tag and digest. */
const namePattern = `(?:${domainAndPort}/)?${remoteName}`
/** Up to 128 word characters, dots and dashes, not starting with a dot or dash. */
const tagPattern = '[\\w][\\w.-]{0,127}'
/** Algorithm (components joined by `-_+.`), colon, at least 128 bits of hex. */
const digestPattern = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}'
/** A 64-hex image ID, which could be mistaken for a repository name. */
const identifier = '([a-f0-9]{64})'

const anchored = (re: string): RegExp => new RegExp(`^${re}$`)

/** The grammar, anchored; `name` and `reference` capture the groups noted on them. */
export const referenceGrammar = Object.freeze({
  /** Host and optional port. */
  domainAndPort: anchored(domainAndPort),
  /** Name split into captures 1 = domain (may be absent) and 2 = path. */
  name: anchored(`(?:(${domainAndPort})/)?(${remoteName})`),
  /** Full reference: captures 1 = name, 2 = tag, 3 = digest. */
  reference: anchored(`(${namePattern})(?::(${tagPattern}))?(?:@(${digestPattern}))?`),
  tag: anchored(tagPattern),
  digest: anchored(digestPattern),
  identifier: anchored(identifier),
})

// ---- digest validation -----------------------------------------------------------------------

/** Registered digest algorithms and the length of their lowercase-hex encoding. */
const digestHexLength = new Map<string, number>([
  ['sha256', 64],
  ['sha384', 96],
  ['sha512', 128],
])

/** Digest syntax that an unregistered algorithm must have to be "unsupported" rather than invalid. */
const wellFormedDigest = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

const invalidDigest = (): ReferenceError => new ReferenceError('invalid-digest', 'invalid checksum digest format')

/**
 * Registered algorithms need lowercase hex of exactly their length; others are "unsupported" when
 * well formed. Returns the error instead of throwing.
 */
function digestError(d: string): ReferenceError | undefined {
  const i = d.indexOf(':')
  if (i <= 0 || i + 1 === d.length) return invalidDigest()
  const length = digestHexLength.get(d.slice(0, i))
  if (length === undefined) {
    if (!wellFormedDigest.test(d)) return invalidDigest()
    return new ReferenceError('unsupported-digest', 'unsupported digest algorithm')
  }
  const encoded = d.slice(i + 1)
  if (encoded.length !== length) {
    return new ReferenceError('invalid-digest-length', 'invalid checksum digest length')
  }
  return /^[a-f0-9]+$/.test(encoded) ? undefined : invalidDigest()
}

// ---- helpers ---------------------------------------------------------------------------------

/**
 * Lower-cases like the kubelet's runtime: per character, so `İ` (U+0130) becomes a plain `i`
 * (JavaScript would give `i` plus a combining dot).
 */
function toLower(s: string): string {
  return s.replace(/\u0130/g, 'i').toLowerCase()
}

function build(domain: string, path: string, tag?: string, digest?: string): ImageReference {
  const ref: ImageReference = { domain, path }
  if (tag !== undefined && tag !== '') ref.tag = tag
  if (digest !== undefined && digest !== '') ref.digest = digest
  return ref
}

/** Splits a valid name into domain and path with the anchored name grammar. */
function splitDomain(name: string): { domain: string; path: string } {
  const m = referenceGrammar.name.exec(name)
  if (!m) return { domain: '', path: name }
  return { domain: m[1] ?? '', path: m[2] ?? '' }
}

/**
 * Splits a familiar name into Docker Hub domain and remainder (path plus tag/digest). The first
 * component is a domain if it has a `.` or `:`, is `localhost`, or has an uppercase letter.
 */
function splitDockerDomain(name: string): [domain: string, remainder: string] {
  const slash = name.indexOf('/')
  if (slash === -1) return [DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name]

  const maybeDomain = name.slice(0, slash)
  const maybeRemainder = name.slice(slash + 1)
  let domain: string
  let remainder: string
  if (maybeDomain === 'localhost') {
    ;[domain, remainder] = [maybeDomain, maybeRemainder]
  } else if (maybeDomain === LEGACY_DEFAULT_DOMAIN) {
    ;[domain, remainder] = [DEFAULT_DOMAIN, maybeRemainder]
  } else if (/[.:]/.test(maybeDomain) || toLower(maybeDomain) !== maybeDomain) {
    ;[domain, remainder] = [maybeDomain, maybeRemainder]
  } else {
    ;[domain, remainder] = [DEFAULT_DOMAIN, name]
  }
  if (domain === DEFAULT_DOMAIN && !remainder.includes('/')) {
    remainder = OFFICIAL_REPO_PREFIX + remainder
  }
  return [domain, remainder]
}

// ---- parsing ---------------------------------------------------------------------------------

/** Parses a reference without normalising it: `nginx` has domain '' and path `nginx`. */
export function parse(s: string): ImageReference {
  if (s === '') {
    throw new ReferenceError('name-empty', 'repository name must have at least one component')
  }
  const m = referenceGrammar.reference.exec(s)
  if (!m) {
    const lower = toLower(s)
    if (lower !== s && referenceGrammar.reference.test(lower)) {
      throw new ReferenceError('name-contains-uppercase', 'repository name must be lowercase')
    }
    throw new ReferenceError('invalid-format', 'invalid reference format')
  }
  const { domain, path } = splitDomain(m[1] ?? '')
  if (path.length > NAME_TOTAL_LENGTH_MAX) {
    throw new ReferenceError('name-too-long', `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`)
  }
  const digest = m[3]
  if (digest !== undefined) {
    const err = digestError(digest)
    if (err) throw err
  }
  return build(domain, path, m[2], digest)
}

/** Parses a possibly familiar reference (`nginx:1`) into its full form, as the kubelet does. */
export function parseNormalizedNamed(s: string): ImageReference {
  if (referenceGrammar.identifier.test(s)) {
    throw new ReferenceError('name-is-identifier', `invalid repository name (${s}), cannot specify 64-byte hexadecimal strings`)
  }
  const [domain, remainder] = splitDockerDomain(s)
  const colon = remainder.indexOf(':')
  const remote = colon > -1 ? remainder.slice(0, colon) : remainder
  if (toLower(remote) !== remote) {
    throw new ReferenceError('name-contains-uppercase', `invalid reference format: repository name (${remote}) must be lowercase`)
  }
  return parse(`${domain}/${remainder}`)
}

/** Like `parseNormalizedNamed`, but the input must already be in canonical (full) form. */
export function parseNamed(s: string): ImageReference {
  const ref = parseNormalizedNamed(s)
  if (formatReference(ref) !== s) {
    throw new ReferenceError('name-not-canonical', 'repository name must be canonical')
  }
  return ref
}

/** Accepts a 64-hex image ID (as `sha256:<id>`), a bare valid digest, or a familiar reference. */
export function parseAnyReference(s: string): ImageReference | DigestReference {
  if (referenceGrammar.identifier.test(s)) return { digest: `sha256:${s}` }
  if (digestError(s) === undefined) return { digest: s }
  return parseNormalizedNamed(s)
}

/**
 * Normalises like `parseNormalizedNamed`, then keeps only the digest when there are both a tag
 * and a digest, and adds the `latest` tag when there is neither.
 */
export function parseDockerRef(s: string): ImageReference {
  const ref = parseNormalizedNamed(s)
  if (ref.tag !== undefined && ref.digest !== undefined) {
    return build(ref.domain, ref.path, undefined, ref.digest)
  }
  return tagNameOnly(ref)
}

export function tryParseNormalizedNamed(s: string): { ok: true; ref: ImageReference } | { ok: false; error: ReferenceError } {
  try {
    return { ok: true, ref: parseNormalizedNamed(s) }
  } catch (error) {
    if (error instanceof ReferenceError) return { ok: false, error }
    throw error
  }
}

// ---- building --------------------------------------------------------------------------------

/** A bare name (no tag or digest, no normalisation), split into domain and path. */
export function withName(name: string): ImageReference {
  const m = referenceGrammar.name.exec(name)
  if (!m) throw new ReferenceError('invalid-format', 'invalid reference format')
  const path = m[2] ?? ''
  if (path.length > NAME_TOTAL_LENGTH_MAX) {
    throw new ReferenceError('name-too-long', `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`)
  }
  return build(m[1] ?? '', path)
}

/** Sets the tag, keeping any digest. */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!referenceGrammar.tag.test(tag)) {
    throw new ReferenceError('invalid-tag', 'invalid tag format')
  }
  return build(ref.domain, ref.path, tag, ref.digest)
}

/** Sets the digest, keeping any tag. Only the grammar is checked, not the algorithm's length. */
export function withDigest(ref: ImageReference, digest: string): ImageReference {
  if (!referenceGrammar.digest.test(digest)) {
    throw new ReferenceError('invalid-digest', 'invalid digest format')
  }
  return build(ref.domain, ref.path, ref.tag, digest)
}

/** Adds the `latest` tag if the reference has neither tag nor digest. */
export function tagNameOnly(ref: ImageReference): ImageReference {
  if (ref.tag === undefined && ref.digest === undefined) return withTag(ref, DEFAULT_TAG)
  return build(ref.domain, ref.path, ref.tag, ref.digest)
}

// ---- formatting ------------------------------------------------------------------------------

/** `domain/path`, or just `path` when there is no domain. */
export function referenceName(ref: ImageReference): string {
  return ref.domain === '' ? ref.path : `${ref.domain}/${ref.path}`
}

/** The full string: `domain/path[:tag][@digest]`; a bare digest is returned as is. */
export function formatReference(ref: ImageReference | DigestReference): string {
  if (!('path' in ref)) return ref.digest
  let s = referenceName(ref)
  if (ref.tag !== undefined) s += `:${ref.tag}`
  if (ref.digest !== undefined) s += `@${ref.digest}`
  return s
}

/** Drops `docker.io/` and, for single-component official images, `library/`. */
function familiarize(ref: ImageReference): ImageReference {
  if (ref.domain !== DEFAULT_DOMAIN) return build(ref.domain, ref.path, ref.tag, ref.digest)
  let path = ref.path
  if (path.startsWith(OFFICIAL_REPO_PREFIX)) {
    const rest = path.slice(OFFICIAL_REPO_PREFIX.length)
    if (!rest.includes('/')) path = rest
  }
  return build('', path, ref.tag, ref.digest)
}

/** The name as users write it: `docker.io/library/nginx` → `nginx`. */
export function familiarName(ref: ImageReference): string {
  return referenceName(familiarize(ref))
}

/** The reference as users write it: `docker.io/library/nginx:1` → `nginx:1`. */
export function familiarString(ref: ImageReference | DigestReference): string {
  if (!('path' in ref)) return ref.digest
  return formatReference(familiarize(ref))
}
