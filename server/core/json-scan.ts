// Checks that a stretch of text is one JSON value (RFC 8259, exactly what JSON.parse accepts)
// without building it: for parts of a review that nothing reads (the Pod's managedFields, about
// 40 % of a review's text), checking costs half of what JSON.parse spends building them.

// Deeper nesting is not scanned (the caller parses the whole text instead).
export const JSON_SCAN_DEPTH = 256

const IN_ARRAY = 1
const IN_OBJECT = 2
// One stack for every scan: a scan runs to its end without yielding.
const open = new Uint8Array(JSON_SCAN_DEPTH)

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COLON = 0x3a
const COMMA = 0x2c

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39
}

function isHex(c: number): boolean {
  return isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)
}

// JSON's whitespace: space, tab, line feed, carriage return (not form feed, not Unicode spaces).
function skipSpace(s: string, i: number): number {
  let c = s.charCodeAt(i)
  while (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) c = s.charCodeAt(++i)
  return i
}

// The end of the string starting with the quote at i, or -1.
function stringEnd(s: string, i: number): number {
  let j = i + 1
  for (;;) {
    // Plain characters: all but the quote, the backslash and control characters.
    let c = s.charCodeAt(j)
    while (c > BACKSLASH || (c >= 0x20 && c !== QUOTE && c !== BACKSLASH)) c = s.charCodeAt(++j)
    if (c === QUOTE) return j + 1
    // A control character, or the end of the text (charCodeAt gives NaN).
    if (c !== BACKSLASH) return -1
    const e = s.charCodeAt(j + 1)
    if (e === 0x75) {
      // \uXXXX
      if (!isHex(s.charCodeAt(j + 2)) || !isHex(s.charCodeAt(j + 3)) || !isHex(s.charCodeAt(j + 4)) || !isHex(s.charCodeAt(j + 5)))
        return -1
      j += 6
    } else if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) j += 2
    else return -1
  }
}

// The end of the number starting at i, or -1: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
function numberEnd(s: string, i: number): number {
  let c = s.charCodeAt(i)
  if (c === 0x2d) c = s.charCodeAt(++i)
  if (c === 0x30) c = s.charCodeAt(++i)
  else if (c >= 0x31 && c <= 0x39) {
    do c = s.charCodeAt(++i)
    while (isDigit(c))
  } else return -1
  if (c === 0x2e) {
    c = s.charCodeAt(++i)
    if (!isDigit(c)) return -1
    do c = s.charCodeAt(++i)
    while (isDigit(c))
  }
  if (c === 0x65 || c === 0x45) {
    c = s.charCodeAt(++i)
    if (c === 0x2b || c === 0x2d) c = s.charCodeAt(++i)
    if (!isDigit(c)) return -1
    do c = s.charCodeAt(++i)
    while (isDigit(c))
  }
  return i
}

// After an object's "{" or ",": the key and its colon; the index after the colon, or -1.
function keyEnd(s: string, i: number): number {
  i = skipSpace(s, i)
  if (s.charCodeAt(i) !== QUOTE || (i = stringEnd(s, i)) < 0) return -1
  i = skipSpace(s, i)
  return s.charCodeAt(i) === COLON ? i + 1 : -1
}

/**
 * The index just after the JSON value that starts at `start` (after optional whitespace), or -1
 * when the text there is not a JSON value or nests deeper than JSON_SCAN_DEPTH. Linear in the
 * value's length; allocates nothing.
 */
export function jsonValueEnd(s: string, start: number): number {
  let depth = 0
  let i = start
  for (;;) {
    // A value.
    i = skipSpace(s, i)
    const c = s.charCodeAt(i)
    if (c === 0x7b || c === 0x5b) {
      const empty = skipSpace(s, i + 1)
      if (s.charCodeAt(empty) === c + 2) {
        // {} or []
        i = empty + 1
      } else {
        if (depth >= JSON_SCAN_DEPTH) return -1
        if (c === 0x5b) {
          open[depth++] = IN_ARRAY
          i += 1
        } else {
          open[depth++] = IN_OBJECT
          if ((i = keyEnd(s, i + 1)) < 0) return -1
        }
        continue
      }
    } else if (c === QUOTE) i = stringEnd(s, i)
    else if (c === 0x74) i = s.startsWith('true', i) ? i + 4 : -1
    else if (c === 0x66) i = s.startsWith('false', i) ? i + 5 : -1
    else if (c === 0x6e) i = s.startsWith('null', i) ? i + 4 : -1
    else i = numberEnd(s, i)
    if (i < 0) return -1
    // After a value: a comma and the next member, or the ends of the arrays and objects it closes.
    for (;;) {
      if (depth === 0) return i
      i = skipSpace(s, i)
      const next = s.charCodeAt(i)
      const inside = open[depth - 1]
      if (next === COMMA) {
        i = inside === IN_OBJECT ? keyEnd(s, i + 1) : i + 1
        if (i < 0) return -1
        break
      }
      if ((next === 0x5d && inside === IN_ARRAY) || (next === 0x7d && inside === IN_OBJECT)) {
        depth -= 1
        i += 1
      } else return -1
    }
  }
}

/** Whether the whole text is one JSON value, surrounding whitespace allowed: what JSON.parse accepts. */
export function isJsonText(s: string): boolean {
  const end = jsonValueEnd(s, 0)
  return end >= 0 && skipSpace(s, end) === s.length
}
