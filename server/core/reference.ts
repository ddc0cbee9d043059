// Image references, parsed and normalised as the kubelet does. The grammar is split as in
// distribution/reference: reference/regexp.ts (the expressions), reference/reference.ts (parsing
// and formatting), reference/normalize.ts (familiar names such as `nginx`). This entry point
// exports what the rest of mirrorhook uses.
export { tryParseNormalizedNamed } from './reference/normalize.js'
export { formatReference, type ImageReference, ImageReferenceError } from './reference/reference.js'
