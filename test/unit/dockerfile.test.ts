// The Dockerfile, checked without a Docker engine: what it copies exists and is
// not hidden by .dockerignore, each stage produces what a later stage copies from
// it, and the entrypoint starts from a production-only install.
import t from 'tap'
import { spawn } from 'node:child_process'
import { cp, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))

interface Instruction {
  keyword: string
  args: string
}

function parseDockerfile(text: string): Instruction[] {
  const joined = text.replace(/\\\r?\n/g, ' ')
  return joined
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [keyword = '', ...rest] = line.split(/\s+/)
      return { keyword: keyword.toUpperCase(), args: rest.join(' ') }
    })
}

interface Stage {
  name: string
  from: string
  instructions: Instruction[]
}

function stagesOf(instructions: Instruction[]): Stage[] {
  const args = new Map<string, string>()
  const stages: Stage[] = []
  for (const ins of instructions) {
    if (ins.keyword === 'ARG' && stages.length === 0) {
      const [name = '', value = ''] = ins.args.split('=')
      args.set(name, value)
    } else if (ins.keyword === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args)
      const from = (m?.[1] ?? '').replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? '')
      stages.push({ name: m?.[2] ?? String(stages.length), from, instructions: [] })
    } else {
      stages.at(-1)?.instructions.push(ins)
    }
  }
  return stages
}

interface Copy {
  from?: string
  sources: string[]
  dest: string
}

function copiesOf(stage: Stage): Copy[] {
  return stage.instructions
    .filter((i) => i.keyword === 'COPY')
    .map((i) => {
      const words = i.args.split(/\s+/)
      const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length)
      const paths = words.filter((w) => !w.startsWith('--'))
      return { from, sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' }
    })
}

// .dockerignore semantics for the patterns a context needs: globs per path segment,
// `!` re-includes, the last matching line wins, a matched folder covers what is inside it.
// Stands for `**` while single stars are translated; a pattern never contains it.
const DOUBLE_STAR = '\uE000'

function ignoredBy(patterns: string[], path: string): boolean {
  const toRegex = (glob: string) =>
    new RegExp(
      `^${glob
        .replace(/[.+^${}()|[\]\\]/g, '\\$&')
        .replace(/\*\*/g, DOUBLE_STAR)
        .replace(/\*/g, '[^/]*')
        .replace(/\?/g, '[^/]')
        .replaceAll(DOUBLE_STAR, '.*')}(/.*)?$`,
    )
  let ignored = false
  for (const line of patterns) {
    const negated = line.startsWith('!')
    const glob = (negated ? line.slice(1) : line).replace(/^\/+|\/+$/g, '')
    if (toRegex(glob).test(path)) ignored = !negated
  }
  return ignored
}

function run(cmd: string, args: string[], cwd: string, timeoutMs = 540_000): Promise<{ code: number; out: string }> {
  return new Promise((resolvePromise) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolvePromise({ code: code ?? 1, out })
    })
  })
}

const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8')
const dockerignore = (await readFile(join(ROOT, '.dockerignore'), 'utf8'))
  .split(/\r?\n/)
  .map((l) => l.trim())
  .filter((l) => l && !l.startsWith('#'))
const stages = stagesOf(parseDockerfile(dockerfile))
const runtime = stages.at(-1)!

t.test('stages: build, production dependencies, a small non-root runtime', async (t) => {
  t.strictSame(
    stages.map((s) => s.name),
    ['build', 'prod-deps', 'runtime'],
  )
  const runs = (s: Stage) => s.instructions.filter((i) => i.keyword === 'RUN').map((i) => i.args)
  t.strictSame(runs(stages[0]!), ['npm ci --no-audit --no-fund', 'npm run build'], 'build stage installs the full set and compiles')
  t.strictSame(runs(stages[1]!), ['npm ci --omit=dev --ignore-scripts --no-audit --no-fund'], 'runtime dependencies without dev ones')
  t.equal(runtime.from, 'gcr.io/distroless/nodejs20-debian12:nonroot')
  t.strictSame(runs(runtime), [], 'nothing runs in the runtime stage (distroless has no shell)')
  const user = runtime.instructions.find((i) => i.keyword === 'USER')?.args ?? ''
  t.equal(user, '65532:65532', 'numeric non-root user, so runAsNonRoot can be enforced')
  t.strictSame(
    runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => i.args),
    ['NODE_ENV=production', 'MALLOC_TRIM_THRESHOLD_=8388608'],
    'production mode; glibc keeps 8 MiB free at the top of its heap (no shrink and regrow per TLS write)',
  )
})

t.test('every path copied from the build context exists and is not excluded by .dockerignore', async (t) => {
  const fromContext = stages.flatMap(copiesOf).filter((c) => !c.from)
  t.strictSame(
    fromContext.map((c) => c.sources),
    [['package.json', 'package-lock.json'], ['tsconfig.json'], ['server'], ['package.json', 'package-lock.json'], ['package.json']],
  )
  for (const copy of fromContext) {
    for (const source of copy.sources) {
      await t.resolves(stat(join(ROOT, source)), `${source} exists`)
      t.equal(ignoredBy(dockerignore, source.replace(/^\.\//, '')), false, `${source} reaches the builder`)
    }
  }
  for (const heavy of ['node_modules', 'dist', 'test', '.git', '.dev-certs', 'charts']) {
    t.equal(ignoredBy(dockerignore, heavy), true, `${heavy} stays out of the build context`)
  }
})

t.test('stages copy only from earlier stages', async (t) => {
  t.strictSame(
    stages.flatMap((stage) =>
      copiesOf(stage)
        .filter((c) => c.from)
        .map((c) => [stage.name, c.from]),
    ),
    [
      ['runtime', 'prod-deps'],
      ['runtime', 'build'],
    ],
  )
  for (const [index, stage] of stages.entries()) {
    for (const copy of copiesOf(stage).filter((c) => c.from)) {
      const source = stages.findIndex((s) => s.name === copy.from)
      t.equal(source >= 0 && source < index, true, `${stage.name} copies from ${copy.from}`)
    }
  }
})

t.test('the entrypoint starts from a production-only install', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'mirrorhook-image-'))
  t.teardown(() => rm(work, { recursive: true, force: true }))
  const build = join(work, 'build')
  const app = join(work, 'app')

  // The build stage: its context files, compiled with the repository's dev dependencies.
  for (const copy of copiesOf(stages[0]!)) {
    for (const source of copy.sources) await cp(join(ROOT, source), join(build, source), { recursive: true })
  }
  await symlink(join(ROOT, 'node_modules'), join(build, 'node_modules'), 'dir')
  const compiled = await run('node', [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], build)
  t.equal(compiled.code, 0, 'tsc builds dist/', { output: compiled.out })

  // The runtime stage: package files, production node_modules, and dist from the build stage.
  for (const copy of copiesOf(runtime)) {
    for (const source of copy.sources) {
      if (!copy.from) await cp(join(ROOT, source), join(app, source), { recursive: true })
      else if (copy.from === 'build') await cp(join(build, source.replace(/^\/app\//, '')), join(app, copy.dest), { recursive: true })
    }
  }
  await cp(join(ROOT, 'package-lock.json'), join(app, 'package-lock.json'))
  // From the npm cache the repository's own `npm ci` filled: a test never reaches a registry.
  const install = await run('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--offline'], app)
  t.equal(install.code, 0, 'npm ci --omit=dev', { output: install.out.slice(-3000) })
  await t.rejects(stat(join(app, 'node_modules', 'typescript')), 'no dev dependencies installed')
  await t.rejects(stat(join(app, 'node_modules', 'tap')), 'no test runner installed')

  const entrypoint = JSON.parse(runtime.instructions.find((i) => i.keyword === 'ENTRYPOINT')?.args ?? '[]') as string[]
  const cmd = JSON.parse(runtime.instructions.find((i) => i.keyword === 'CMD')?.args ?? '[]') as string[]
  t.strictSame(cmd, ['serve'])
  const script = entrypoint[1] ?? ''
  t.equal(script, 'dist/server/cli.js')

  const help = await run('node', [script, '--help'], app, 60_000)
  t.equal(help.code, 0, '--help exits 0', { output: help.out })
  // Commander wraps at 80 columns when standard output is not a terminal.
  t.equal(
    help.out,
    [
      'Usage: mirrorhook [options] [command]',
      '',
      'Rewrites Pod images to a registry mirror at admission time, and pre-pulls them',
      'with kube-fledged.',
      '',
      'Options:',
      '  -h, --help                    display help for command',
      '',
      'Commands:',
      '  serve [options]               run the admission webhook (HTTPS) and the',
      '                                metrics listener',
      '  dry-run [options]             print the manifests as mirrorhook would admit',
      '                                them; decisions go to stderr (no cluster needed)',
      '  rewrite [options] <image...>  show what mirrorhook does with each image',
      '                                reference',
      '  state [options]               list each registry with its state, the evidence',
      '                                and since when',
      '  prewarm [options]             show what the next pre-warm run would pull: per',
      '                                workload and container, the tag chosen and why,',
      '                                the reference and the ImageCache (batch) holding',
      '                                it',
      '  help [command]                display help for command',
      '',
    ].join('\n'),
    'lists serve, dry-run, rewrite, state and prewarm',
  )

  // The default command itself: it loads every runtime module and listens. The embedded
  // configuration would probe public registries; this one probes nothing.
  const config = join(work, 'config.yaml')
  await writeFile(config, 'reachability:\n  probes:\n    enabled: false\n')
  const child = spawn(
    'node',
    [
      script,
      ...cmd,
      '--config',
      config,
      '--port',
      '0',
      '--host',
      '127.0.0.1',
      '--metrics-port',
      'off',
      '--dev-cert-dir',
      join(work, 'certs'),
    ],
    {
      cwd: app,
      env: { ...process.env, KUBECONFIG: join(work, 'none'), HOME: work, KUBERNETES_SERVICE_HOST: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let log = ''
  const listening = await new Promise<boolean>((resolvePromise) => {
    const timer = setTimeout(() => resolvePromise(false), 30_000)
    const onData = (d: Buffer) => {
      log += d
      if (log.includes('mirrorhook listening on https://')) {
        clearTimeout(timer)
        resolvePromise(true)
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('exit', () => resolvePromise(false))
  })
  t.equal(listening, true, 'serve starts and listens', { log: log.slice(-2000) })
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'stops cleanly on SIGTERM')
})
