// The JSON text of an AdmissionReview, parsed for what mirrorhook reads. JSON.parse is most of a
// review's cost (about 30 µs of 70 for a 10 KB review of a ReplicaSet Pod), and about 40 % of the
// text is the Pod's managedFields, which nothing here reads. Their text is checked to be JSON
// (json-scan.ts, half the cost of building them) and the rest is parsed with a marker in their place.
import { isObj } from '../core/json.js'
import { jsonValueEnd } from '../core/json-scan.js'

// Either word of a prototype-poisoning key; a regular expression of two alternatives searches
// faster than either substring alone.
const SUSPECT_WORDS = /__proto__|constructor/

// What request.object.metadata.managedFields (and oldObject's) read as when skipped. In the
// text it is spelled "\u0000skipped"; no other string can hold U+0000, because a plain text has no
// \u escape at all and JSON strings cannot hold a raw control character. So finding this value
// there after the parse proves that the marker is what sits there.
export const SKIPPED_MANAGED_FIELDS = '\u0000skipped'
const MARKER_JSON = '"\\u0000skipped"'

// As the API server writes the key (Go's encoding/json: no spaces); only a list is skipped.
const KEY = '"managedFields":'
const MAX_SKIPPED = 2

/**
 * JSON.parse(text) for a plain text: one with no `\u` escape and neither `__proto__` nor
 * `constructor` anywhere, which the prototype-poisoning check of Fastify's JSON parser
 * (secure-json-parse) therefore cannot match. Undefined for any other text (and for an empty one):
 * that goes to Fastify's parser, for the same results and errors. Throws JSON.parse's error for a
 * text that is not JSON.
 *
 * The result is JSON.parse's, except that request.object.metadata.managedFields and
 * request.oldObject.metadata.managedFields, when lists, read as SKIPPED_MANAGED_FIELDS. They are
 * checked, not built: the text with a marker in their place is JSON exactly when the text is,
 * since each list was checked to be one JSON value. When a marker lands anywhere else (a key so
 * named elsewhere, a repeated key), the whole text is parsed again as it is.
 */
export function parseReviewText(text: string): unknown {
  if (text.length === 0 || text.includes('\\u') || SUSPECT_WORDS.test(text)) return undefined
  // The text up to `copied` with markers in place of the lists skipped so far.
  let marked = ''
  let copied = 0
  let skipped = 0
  for (let at = text.indexOf(KEY); at >= 0 && skipped < MAX_SKIPPED;) {
    const start = at + KEY.length
    if (text.charCodeAt(start) === 0x5b) {
      const end = jsonValueEnd(text, start)
      // Not JSON (JSON.parse then says where), or nested too deep to scan.
      if (end < 0) return JSON.parse(text)
      marked += text.slice(copied, start) + MARKER_JSON
      copied = end
      skipped += 1
    }
    at = text.indexOf(KEY, Math.max(start, copied))
  }
  if (skipped === 0) return JSON.parse(text)
  let parsed: unknown
  try {
    parsed = JSON.parse(marked + text.slice(copied))
  } catch {
    // Not JSON either: the error as JSON.parse gives it for the text itself (its positions).
    return JSON.parse(text)
  }
  return markersInPlace(parsed) === skipped ? parsed : JSON.parse(text)
}

// How many of the two places hold the marker.
function markersInPlace(review: unknown): number {
  const request = isObj(review) ? review.request : undefined
  if (!isObj(request)) return 0
  let found = 0
  for (const pod of [request.object, request.oldObject]) {
    if (isObj(pod) && isObj(pod.metadata) && pod.metadata.managedFields === SKIPPED_MANAGED_FIELDS) found += 1
  }
  return found
}
