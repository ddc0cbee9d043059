// Familiar names as the kubelet reads and writes them (distribution/reference normalize.go):
// `nginx:1` is `docker.io/library/nginx:1`.
import {
  build,
  digestError,
  type DigestReference,
  formatReference,
  type ImageReference,
  ImageReferenceError,
  parse,
  referenceName,
  toLower,
  withTag,
} from './reference.js'
import { referenceGrammar } from './regexp.js'

/** Domain that familiar names such as `nginx` belong to. */
export const DEFAULT_DOMAIN = 'docker.io'
/** Old name of the Docker Hub domain, rewritten to `DEFAULT_DOMAIN`. */
export const LEGACY_DEFAULT_DOMAIN = 'index.docker.io'
/** Namespace of Docker Hub's official images: `nginx` is `library/nginx`. */
export const OFFICIAL_REPO_PREFIX = 'library/'
/** Tag assumed when a reference has neither tag nor digest. */
export const DEFAULT_TAG = 'latest'

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

/** Parses a possibly familiar reference (`nginx:1`) into its full form, as the kubelet does. */
export function parseNormalizedNamed(s: string): ImageReference {
  if (referenceGrammar.identifier.test(s)) {
    throw new ImageReferenceError('name-is-identifier', `invalid repository name (${s}), cannot specify 64-byte hexadecimal strings`)
  }
  const [domain, remainder] = splitDockerDomain(s)
  const colon = remainder.indexOf(':')
  const remote = colon > -1 ? remainder.slice(0, colon) : remainder
  if (toLower(remote) !== remote) {
    throw new ImageReferenceError('name-contains-uppercase', `invalid reference format: repository name (${remote}) must be lowercase`)
  }
  return parse(`${domain}/${remainder}`)
}

/** Like `parseNormalizedNamed`, but the input must already be in canonical (full) form. */
export function parseNamed(s: string): ImageReference {
  const ref = parseNormalizedNamed(s)
  if (formatReference(ref) !== s) {
    throw new ImageReferenceError('name-not-canonical', 'repository name must be canonical')
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

export function tryParseNormalizedNamed(s: string): { ok: true; ref: ImageReference } | { ok: false; error: ImageReferenceError } {
  try {
    return { ok: true, ref: parseNormalizedNamed(s) }
  } catch (error) {
    if (error instanceof ImageReferenceError) return { ok: false, error }
    throw error
  }
}

/** Adds the `latest` tag if the reference has neither tag nor digest. */
export function tagNameOnly(ref: ImageReference): ImageReference {
  if (ref.tag === undefined && ref.digest === undefined) return withTag(ref, DEFAULT_TAG)
  return build(ref.domain, ref.path, ref.tag, ref.digest)
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
