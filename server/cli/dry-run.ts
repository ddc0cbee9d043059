// `mirrorhook dry-run -f FILE|-`: the manifests as mirrorhook would admit their Pods.
// Documents are composed and decided one at a time (memory bounded by the largest document),
// the input is capped, and the change is applied to the YAML itself so comments survive.
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import type { Readable } from 'node:stream'
import type { Command } from 'commander'
import { Composer, type Document, isAlias, isCollection, isMap, isNode, isScalar, isSeq, LineCounter, type Node, Parser, visit } from 'yaml'
import { planManifest } from '../core/manifests.js'
import type { JsonPatchOp } from '../core/pod.js'
import { staticReachability } from '../core/rewrite.js'
import { loadConfig } from '../config/load.js'
import { withAllowlistsOnce } from '../mirrors/allowlists.js'
import { CliError, describeDecision } from './common.js'

// Well above what one `helm template` of a large chart gives, and a bound on time: the YAML
// parser reads about 1 MiB/s on one core. Past it the input is refused, not read.
export const MAX_INPUT_BYTES = 16 * 1024 * 1024

async function readCapped(stream: Readable, name: string, limit: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of stream) {
    size += (chunk as Buffer).length
    if (size > limit) {
      stream.destroy()
      throw new CliError(`${name} is larger than ${limit / 1024 / 1024} MiB: split it, e.g. one file per application`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

async function readInput(file: string, limit: number, stdin: Readable): Promise<string> {
  if (file === '-') return readCapped(stdin, 'standard input', limit)
  try {
    // A regular file's size is known: refuse it without reading it.
    const { size } = await stat(file)
    if (size > limit) throw new CliError(`${file} is larger than ${limit / 1024 / 1024} MiB: split it, e.g. one file per application`)
    return await readCapped(createReadStream(file), file, limit)
  } catch (error) {
    if (error instanceof CliError) throw error
    throw new CliError(`cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`)
  }
}

// JSON Pointer → yaml path; numeric segments index sequences.
function pointerPath(pointer: string): (string | number)[] {
  return pointer
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s))
}

function unanchoredCopy(node: Node): Node {
  const copy = node.clone() as Node
  visit(copy, {
    Node(_, n) {
      delete (n as { anchor?: string }).anchor
    },
  })
  delete (copy as { anchor?: string }).anchor
  return copy
}

// Admission changes one Pod's image and nothing else. In YAML a node on the way to that image
// may be shared: an alias on the path is replaced by a copy of what it stands for, and the
// aliases of an anchored node on the path get copies of its current value, so the change
// stays where the Pod is.
function detach(doc: Document, path: readonly (string | number)[]): void {
  let parent: unknown = undefined
  let node: unknown = doc.contents
  for (let i = 0; ; i++) {
    if (isAlias(node) && isCollection(parent)) {
      const source = node.resolve(doc)
      if (!source) return
      const copy = unanchoredCopy(source)
      parent.set(path[i - 1], copy)
      node = copy
    }
    if ((isScalar(node) || isCollection(node)) && node.anchor) {
      const target = node
      visit(doc, {
        Alias(_, alias) {
          if (alias.source === target.anchor && alias.resolve(doc) === target) return unanchoredCopy(target)
          return undefined
        },
      })
      delete target.anchor
    }
    if (i === path.length || !isCollection(node)) return
    parent = node
    node = node.get(path[i], true)
  }
}

/** Applies the add/replace ops of a patch to the YAML document itself. */
export function applyToDocument(doc: Document, ops: readonly JsonPatchOp[]): void {
  for (const op of ops) {
    if (op.op !== 'add' && op.op !== 'replace') continue
    const path = pointerPath(op.path)
    detach(doc, path)
    const node = doc.getIn(path, true)
    // A scalar keeps its quoting and comments; anything else is a new node.
    if (isScalar(node) && typeof op.value === 'string') node.value = op.value
    else doc.setIn(path, isNode(op.value) ? op.value : doc.createNode(op.value))
  }
}

export interface DryRunIo {
  readonly stdin: Readable
  readonly stdout: { write(s: string): unknown }
  readonly stderr: { write(s: string): unknown }
}

export interface DryRunOptions {
  readonly file: string
  readonly config?: string
  readonly maxBytes?: number
}

/** Prints the documents as they would be admitted, and on stderr each decision and why. No side effects. */
export async function dryRun(options: DryRunOptions, io: DryRunIo): Promise<void> {
  const { policy } = await loadConfig(options.config)
  // The static list of unreachable registries, and the mirrors' allowlists as they read now.
  const reachability = await withAllowlistsOnce(policy, staticReachability(policy), (line) => io.stderr.write(`${line}\n`))
  const text = await readInput(options.file, options.maxBytes ?? MAX_INPUT_BYTES, io.stdin)
  const lines = new LineCounter()
  const out: string[] = []
  const notes: string[] = []
  let index = 0
  // Nothing is printed before every document has been read: invalid YAML anywhere prints no manifests.
  for (const doc of new Composer().compose(new Parser(lines.addNewLine).parse(text))) {
    index++
    const error = doc.errors[0]
    if (error) {
      const { line, col } = lines.linePos(error.pos[0])
      throw new CliError(
        `${options.file}: document ${index} is not valid YAML: ${error.message.split('\n')[0]} (line ${line}, column ${col})`,
      )
    }
    const contents = doc.contents
    if (contents === null) continue
    const value: unknown = doc.toJS()
    const kind = isMap(contents) ? String(doc.get('kind') ?? '') : ''
    const items = kind === 'List' && isSeq(doc.get('items')) ? (value as { items: unknown[] }).items : undefined
    const targets = items ? items.map((item, i) => ({ item, prefix: `/items/${i}` })) : [{ item: value, prefix: '' }]
    for (const { item, prefix } of targets) {
      const result = planManifest(item, policy, reachability)
      if (result.unsupported) {
        notes.push(`${result.kind}/${result.name}: no Pod spec, left as is\n`)
        continue
      }
      if (result.skip) {
        notes.push(`${result.kind}/${result.name}: skipped: ${result.skip.reason}\n`)
        continue
      }
      for (const p of result.plans) notes.push(`${result.kind}/${result.name} ${p.field}[${p.name}]: ${describeDecision(p.decision)}\n`)
      for (const op of result.patch) {
        if (!op.path.includes('/imagePullSecrets') || op.op !== 'add') continue
        const added = (Array.isArray(op.value) ? op.value : [op.value]) as { name: string }[]
        for (const s of added) notes.push(`${result.kind}/${result.name}: imagePullSecrets += ${s.name} (the mirror's pull Secret)\n`)
      }
      if (result.annotationSkipped) notes.push(`${result.kind}/${result.name}: annotation not written: ${result.annotationSkipped}\n`)
      applyToDocument(
        doc,
        result.patch.map((op) => ({ ...op, path: `${prefix}${op.path}` })),
      )
    }
    const printed = doc.toString()
    out.push(out.length === 0 || printed.startsWith('---') ? printed : `---\n${printed}`)
  }
  io.stderr.write(notes.join(''))
  io.stdout.write(out.join(''))
}

export function registerDryRun(program: Command): void {
  program
    .command('dry-run')
    .description('print the manifests as mirrorhook would admit them; decisions go to stderr (no cluster needed)')
    .requiredOption(
      '-f, --filename <file>',
      `YAML file with one or more documents, or - for stdin (at most ${MAX_INPUT_BYTES / 1024 / 1024} MiB)`,
    )
    .option('-c, --config <file>', 'configuration file (YAML)')
    .action(async (opts) => dryRun({ file: opts.filename, config: opts.config }, process))
}
