// Helpers shared by the reference grammar tables.
import { type DigestReference, type ImageReference, ImageReferenceError } from '../../../server/core/reference/reference.js'

/** The thrown ImageReferenceError, or undefined if `fn` returned. Other errors propagate. */
export function errorOf(fn: () => unknown): ImageReferenceError | undefined {
  try {
    fn()
    return undefined
  } catch (error) {
    if (error instanceof ImageReferenceError) return error
    throw error
  }
}

/** Number of capture groups in a regexp. */
export function groupCount(re: RegExp): number {
  return (new RegExp(`${re.source}|`).exec('') ?? []).length - 1
}

export const isNamed = (r: ImageReference | DigestReference): r is ImageReference => 'path' in r
