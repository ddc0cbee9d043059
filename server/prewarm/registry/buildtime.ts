// Build time of an image from its manifest and config, pure: the image config's `created`, or
// the `org.opencontainers.image.created` annotation; a multi-arch index gives one platform's.

export const MEDIA = {
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const

/** Accept header for a manifest GET: indexes and single-platform manifests, OCI and Docker v2 (no schema 1). */
export const MANIFEST_ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(', ')

export const CREATED_ANNOTATION = 'org.opencontainers.image.created'

export interface Descriptor {
  readonly mediaType?: string
  readonly digest: string
  readonly platform?: { readonly os?: string; readonly architecture?: string; readonly variant?: string }
}

export type ManifestFacts =
  | { readonly kind: 'index'; readonly manifests: readonly Descriptor[]; readonly annotations: Readonly<Record<string, string>> }
  | { readonly kind: 'image'; readonly configDigest: string; readonly annotations: Readonly<Record<string, string>> }
  | { readonly kind: 'unknown'; readonly why: string }

const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/

function annotationsOf(doc: Record<string, unknown>): Record<string, string> {
  const a = doc.annotations
  if (typeof a !== 'object' || a === null) return {}
  return Object.fromEntries(Object.entries(a).filter((e): e is [string, string] => typeof e[1] === 'string'))
}

export function readManifest(body: string, contentType: string | undefined): ManifestFacts {
  let doc: unknown
  try {
    doc = JSON.parse(body)
  } catch {
    return { kind: 'unknown', why: 'manifest is not JSON' }
  }
  if (typeof doc !== 'object' || doc === null) return { kind: 'unknown', why: 'manifest is not an object' }
  const d = doc as Record<string, unknown>
  const mediaType = typeof d.mediaType === 'string' ? d.mediaType : (contentType?.split(';')[0]?.trim() ?? '')
  if (Array.isArray(d.manifests) && (mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerList || !('config' in d))) {
    const manifests: Descriptor[] = []
    for (const m of d.manifests as unknown[]) {
      if (typeof m !== 'object' || m === null) continue
      const r = m as Record<string, unknown>
      if (typeof r.digest !== 'string' || !DIGEST.test(r.digest)) continue
      const p = typeof r.platform === 'object' && r.platform !== null ? (r.platform as Record<string, unknown>) : undefined
      const str = (v: unknown) => (typeof v === 'string' ? v : undefined)
      manifests.push({
        mediaType: str(r.mediaType),
        digest: r.digest,
        platform: p ? { os: str(p.os), architecture: str(p.architecture), variant: str(p.variant) } : undefined,
      })
    }
    return { kind: 'index', manifests, annotations: annotationsOf(d) }
  }
  const config = d.config as Record<string, unknown> | undefined
  if (typeof config === 'object' && config !== null && typeof config.digest === 'string' && DIGEST.test(config.digest)) {
    return { kind: 'image', configDigest: config.digest, annotations: annotationsOf(d) }
  }
  return { kind: 'unknown', why: `manifest of type ${mediaType || 'unknown'} has no config` }
}

/** The index entry for `platform` (`os/arch[/variant]`); without a variant asked, the first such entry. */
export function choosePlatform(manifests: readonly Descriptor[], platform: string): Descriptor | undefined {
  const [os, architecture, variant] = platform.split('/')
  return manifests.find(
    (m) => m.platform?.os === os && m.platform?.architecture === architecture && (variant === undefined || m.platform?.variant === variant),
  )
}

// Reproducible builds stamp a fixed time (0 = 1970-01-01, some tools 1980-01-01): it says nothing of when the image was built.
const PLACEHOLDER_BEFORE = Date.UTC(1980, 0, 2)

export interface BuildTime {
  readonly time?: number
  /** Where the time came from, or why there is none. */
  readonly source: string
}

function parseTime(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T/.test(value)) return undefined
  const t = Date.parse(value)
  return Number.isNaN(t) ? undefined : t
}

/**
 * The build time: the config's `created`, unless it is missing or a reproducible build's fixed
 * time, then the manifest's (or index's) `org.opencontainers.image.created` annotation.
 */
export function buildTime(configJson: string | undefined, annotations: readonly Readonly<Record<string, string>>[]): BuildTime {
  let created: number | undefined
  if (configJson !== undefined) {
    try {
      created = parseTime((JSON.parse(configJson) as { created?: unknown }).created)
    } catch {
      created = undefined
    }
  }
  if (created !== undefined && created >= PLACEHOLDER_BEFORE) return { time: created, source: 'config created' }
  for (const a of annotations) {
    const t = parseTime(a[CREATED_ANNOTATION])
    if (t !== undefined && t >= PLACEHOLDER_BEFORE) return { time: t, source: `annotation ${CREATED_ANNOTATION}` }
  }
  if (created !== undefined) return { source: `config created ${new Date(created).toISOString()} is a reproducible build's fixed time` }
  return { source: 'no created time in config or annotations' }
}
