// Values parsed from JSON (Pod specs, manifests, reviews), read without trusting their shape.

export type Obj = Record<string, unknown>

/** A JSON object: not null, not an array. */
export function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
