// Parsing, building and formatting image references without normalisation
// (distribution/reference reference.go): `nginx` has domain '' and path `nginx` here; the
// kubelet's normalised form is in normalize.ts.
import { referenceGrammar } from './regexp.js'

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

export type ImageReferenceErrorCode =
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

export class ImageReferenceError extends Error {
  readonly code: ImageReferenceErrorCode
  constructor(code: ImageReferenceErrorCode, message: string) {
    super(message)
    this.name = 'ImageReferenceError'
    this.code = code
  }
}

/** Longest accepted path (the name without its domain). */
export const NAME_TOTAL_LENGTH_MAX = 255

/** Registered digest algorithms and the length of their lowercase-hex encoding. */
const digestHexLength = new Map<string, number>([
  ['sha256', 64],
  ['sha384', 96],
  ['sha512', 128],
])

/** Digest syntax that an unregistered algorithm must have to be "unsupported" rather than invalid. */
const wellFormedDigest = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

const invalidDigest = (): ImageReferenceError => new ImageReferenceError('invalid-digest', 'invalid checksum digest format')

/**
 * Registered algorithms need lowercase hex of exactly their length; others are "unsupported" when
 * well formed. Returns the error instead of throwing.
 */
export function digestError(d: string): ImageReferenceError | undefined {
  const i = d.indexOf(':')
  if (i <= 0 || i + 1 === d.length) return invalidDigest()
  const length = digestHexLength.get(d.slice(0, i))
  if (length === undefined) {
    if (!wellFormedDigest.test(d)) return invalidDigest()
    return new ImageReferenceError('unsupported-digest', 'unsupported digest algorithm')
  }
  const encoded = d.slice(i + 1)
  if (encoded.length !== length) {
    return new ImageReferenceError('invalid-digest-length', 'invalid checksum digest length')
  }
  return /^[a-f0-9]+$/.test(encoded) ? undefined : invalidDigest()
}

/**
 * Lower-cases like the kubelet's runtime: per character, so `İ` (U+0130) becomes a plain `i`
 * (JavaScript would give `i` plus a combining dot).
 */
export function toLower(s: string): string {
  return s.replace(/\u0130/g, 'i').toLowerCase()
}

export function build(domain: string, path: string, tag?: string, digest?: string): ImageReference {
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

/** Parses a reference without normalising it: `nginx` has domain '' and path `nginx`. */
export function parse(s: string): ImageReference {
  if (s === '') {
    throw new ImageReferenceError('name-empty', 'repository name must have at least one component')
  }
  const m = referenceGrammar.reference.exec(s)
  if (!m) {
    const lower = toLower(s)
    if (lower !== s && referenceGrammar.reference.test(lower)) {
      throw new ImageReferenceError('name-contains-uppercase', 'repository name must be lowercase')
    }
    throw new ImageReferenceError('invalid-format', 'invalid reference format')
  }
  const { domain, path } = splitDomain(m[1] ?? '')
  if (path.length > NAME_TOTAL_LENGTH_MAX) {
    throw new ImageReferenceError('name-too-long', `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`)
  }
  const digest = m[3]
  if (digest !== undefined) {
    const err = digestError(digest)
    if (err) throw err
  }
  return build(domain, path, m[2], digest)
}

/** A bare name (no tag or digest, no normalisation), split into domain and path. */
export function withName(name: string): ImageReference {
  const m = referenceGrammar.name.exec(name)
  if (!m) throw new ImageReferenceError('invalid-format', 'invalid reference format')
  const path = m[2] ?? ''
  if (path.length > NAME_TOTAL_LENGTH_MAX) {
    throw new ImageReferenceError('name-too-long', `repository name must not be more than ${NAME_TOTAL_LENGTH_MAX} characters`)
  }
  return build(m[1] ?? '', path)
}

/** Sets the tag, keeping any digest. */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!referenceGrammar.tag.test(tag)) {
    throw new ImageReferenceError('invalid-tag', 'invalid tag format')
  }
  return build(ref.domain, ref.path, tag, ref.digest)
}

/** Sets the digest, keeping any tag. Only the grammar is checked, not the algorithm's length. */
export function withDigest(ref: ImageReference, digest: string): ImageReference {
  if (!referenceGrammar.digest.test(digest)) {
    throw new ImageReferenceError('invalid-digest', 'invalid digest format')
  }
  return build(ref.domain, ref.path, ref.tag, digest)
}

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
