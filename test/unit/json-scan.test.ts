// jsonValueEnd: where one JSON value ends, or -1; isJsonText agrees with JSON.parse on every text.
import t from 'tap'
import { isJsonText, JSON_SCAN_DEPTH, jsonValueEnd } from '../../server/core/json-scan.js'
import { prng } from '../support/prng.js'

t.test('the end of one value, from a start index, whatever follows it', async (t) => {
  const rows: [text: string, start: number, end: number][] = [
    ['0', 0, 1],
    ['-0', 0, 2],
    ['12.50e+3,', 0, 8],
    ['1E-7]', 0, 4],
    ['x:true}', 2, 6],
    ['false', 0, 5],
    ['null ', 0, 4],
    [' \t\r\n"a"', 0, 7],
    ['"say \\"hi\\" \\\\ \\/ \\b\\f\\n\\r\\t"', 0, 29],
    ['"\\u00e9\\uD83D\\uDE00"', 0, 20],
    ['"\\uAFaf\\u0909"', 0, 14],
    ['9', 0, 1],
    ['-19.09e9', 0, 8],
    ['"é ü 漢字 \ud800"', 0, 10],
    ['[]', 0, 2],
    ['[ ]x', 0, 3],
    ['{}', 0, 2],
    ['{ \n}', 0, 4],
    ['[1,"a",[],{},[[null]]]', 0, 22],
    ['{"a":{"b":[1,{"c":"d"}]},"e":false} tail', 0, 35],
    ['{ "a" : 1 , "b" : [ 2 , 3 ] }', 0, 29],
    ['"managedFields":[{"manager":"kubelet","fieldsV1":{"f:status":{}}}],"name":"web"', 16, 66],
    ['{"k:{\\"name\\":\\"app\\"}":{".":{}}}', 0, 33],
  ]
  for (const [text, start, end] of rows) t.equal(jsonValueEnd(text, start), end, JSON.stringify(text))
})

t.test('not a value: -1', async (t) => {
  const rows = [
    '',
    ' ',
    '-',
    '+1',
    '.5',
    '1.',
    '1.e3',
    '1e',
    '1e+',
    'NaN',
    'Infinity',
    '-Infinity',
    'tru',
    'nul',
    'False',
    '"open',
    '"bad \\x escape"',
    '"\\u12G4"',
    '"\\u12"',
    // Just outside the hex digits' ranges: @ G ` g, and : / below and above the digits.
    '"\\u@000"',
    '"\\uG000"',
    '"\\u`000"',
    '"\\ug000"',
    '"\\u:000"',
    '"\\u/000"',
    "'single'",
    '"tab\tinside"',
    '"line\ninside"',
    '"nul\u0000inside"',
    '[',
    '[1',
    '[1,',
    '[1,]',
    '[,1]',
    '[1 2]',
    '[1}',
    '{',
    '{"a"',
    '{"a":',
    '{"a":1',
    '{"a":1,}',
    '{"a" 1}',
    '{a:1}',
    '{1:2}',
    '{"a":1 "b":2}',
    '{"a":1]',
    '\ufeff1',
    '\f1',
    '\u00a01',
    '/* comment */ 1',
  ]
  for (const text of rows) t.equal(jsonValueEnd(text, 0), -1, JSON.stringify(text))
})

t.test('one text is one value and whitespace around it: a value with more after it is not', async (t) => {
  for (const text of ['01', '0x10', '1 2', '[] []', '"a" x', 'true false', '{}}', '1,']) {
    t.equal(isJsonText(text), false, JSON.stringify(text))
  }
  for (const text of ['0', ' 1 ', '\n[1]\r\n', '\t{"a":[]} ']) t.equal(isJsonText(text), true, JSON.stringify(text))
})

t.test(`nesting: ${JSON_SCAN_DEPTH} levels are scanned, deeper is -1 (the caller parses instead)`, async (t) => {
  t.equal(JSON_SCAN_DEPTH, 256)
  const nested = (n: number) => '['.repeat(n) + '1' + ']'.repeat(n)
  t.equal(jsonValueEnd(nested(256), 0), 512 + 1)
  t.equal(jsonValueEnd(nested(257), 0), -1)
  const objects = (n: number) => '{"a":'.repeat(n) + '1' + '}'.repeat(n)
  t.equal(jsonValueEnd(objects(256), 0), 256 * 6 + 1)
  t.equal(jsonValueEnd(objects(257), 0), -1)
  // Empty ones open nothing.
  t.equal(jsonValueEnd('['.repeat(256) + '[]' + ']'.repeat(256), 0), 514)
})

t.test('a scan after a failed one starts afresh (the shared stack holds nothing over)', async (t) => {
  t.equal(jsonValueEnd('[{"a":[1,', 0), -1)
  t.equal(jsonValueEnd('{"b":2}', 0), 7)
  t.equal(jsonValueEnd('[[[[', 0), -1)
  t.equal(jsonValueEnd('[1]', 0), 3)
})

// Texts near JSON: valid documents cut, spliced and with characters swapped, so that most are a
// character or two away from valid. isJsonText must say exactly what JSON.parse says.
t.test('isJsonText agrees with JSON.parse (seeded random texts near JSON)', async (t) => {
  const seed = Number(process.env.MIRRORHOOK_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
  const random = prng(seed)
  const atoms = ['0', '-1.5e+3', '2E-2', '10', 'true', 'false', 'null', '""', '"a\\"b"', '"k:{\\"n\\":\\"x\\"}"', '"é"', '"\\u0041"']
  function value(depth: number): string {
    if (depth > 3 || random.chance(0.4)) return random.pick(atoms)
    const n = random.int(4)
    const space = () => random.pick(['', '', '', ' ', '\n', '\t', '\r\n '])
    if (random.chance(0.5))
      return `[${space()}${Array.from({ length: n }, () => value(depth + 1)).join(`${space()},${space()}`)}${space()}]`
    const members = Array.from(
      { length: n },
      () => `${random.pick(atoms.filter((a) => a.startsWith('"')))}${space()}:${space()}${value(depth + 1)}`,
    )
    return `{${space()}${members.join(',')}${space()}}`
  }
  const noise = ['', ',', ':', '[', ']', '{', '}', '"', '\\', '-', '.', 'e', '0', '1', 't', 'n', ' ', '\t', '\u0001', '\u000c', 'x', 'é']
  function mutate(text: string): string {
    const at = random.int(text.length + 1)
    switch (random.int(4)) {
      case 0:
        return text.slice(0, at) + random.pick(noise) + text.slice(at)
      case 1:
        return text.slice(0, at) + text.slice(at + 1 + random.int(3))
      case 2:
        return text.slice(0, at) + random.pick(noise) + text.slice(at + 1)
      default:
        return text.slice(0, at)
    }
  }
  let valid = 0
  let invalid = 0
  for (let i = 0; i < 20000; i++) {
    let text = value(0)
    for (let m = random.int(3); m > 0; m--) text = mutate(text)
    let parses = true
    try {
      JSON.parse(text)
    } catch {
      parses = false
    }
    if (isJsonText(text) !== parses) {
      t.fail(`seed ${seed}, case ${i}: isJsonText ${!parses} for ${JSON.stringify(text)}`)
      return
    }
    if (parses) valid += 1
    else invalid += 1
  }
  // Both kinds are drawn often enough for the comparison to mean something.
  t.ok(valid > 4000 && invalid > 4000, `seed ${seed}: ${valid} valid, ${invalid} invalid`)
})
