// `mirrorhook dry-run` time and memory on a large manifest stream, printed as figures (not a test).
//   npx tsx test/bench/dry-run.ts [MiB]
// Deployments of about 1.8 KiB each (comments, flow maps, 20 env entries), decided in-process
// with the embedded configuration; peak RSS is sampled every 10 ms.
import { Readable } from 'node:stream'
import { dryRun, MAX_INPUT_BYTES } from '../../server/cli/dry-run.js'

const mib = Number(process.argv[2] ?? 15)

function deployment(i: number): string {
  const env = Array.from({ length: 20 }, (_, j) => `            - {name: VAR_${j}, value: "value number ${j} for ${i}"}`).join('\n')
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-${i}
  labels: {app: web-${i}}
spec:
  replicas: 3
  template:
    metadata:
      labels: {app: web-${i}}
    spec:
      initContainers:
        - name: migrate
          image: ghcr.io/example/migrate:v${i % 50}
      containers:
        - name: web # the server
          image: nginx:1.${i % 30}
          env:
${env}
        - name: side
          image: registry.k8s.io/sidecar:v1
---
`
}

const parts: string[] = []
let size = 0
for (let i = 0; size < mib * 1024 * 1024; i++) {
  const d = deployment(i)
  parts.push(d)
  size += Buffer.byteLength(d)
}
const input = parts.join('')
const documents = parts.length
parts.length = 0

let peak = process.memoryUsage().rss
const baseline = peak
const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10)
let out = 0
let err = 0
const started = performance.now()
await dryRun(
  { file: '-' },
  {
    stdin: Readable.from([Buffer.from(input)]),
    stdout: { write: (s: string) => (out += s.length) },
    stderr: { write: (s: string) => (err += s.length) },
  },
)
const ms = performance.now() - started
clearInterval(sampler)
peak = Math.max(peak, process.memoryUsage().rss)
console.log(
  `dry-run of ${(size / 1024 / 1024).toFixed(1)} MiB (${documents} Deployments): ${(ms / 1000).toFixed(1)} s = ${(size / 1024 / 1024 / (ms / 1000)).toFixed(2)} MiB/s; ` +
    `RSS ${(baseline / 1024 / 1024).toFixed(0)} MiB before, peak ${(peak / 1024 / 1024).toFixed(0)} MiB; output ${(out / 1024 / 1024).toFixed(1)} MiB, decisions ${(err / 1024 / 1024).toFixed(1)} MiB`,
)

const refusedAt = performance.now()
const over = Buffer.alloc(MAX_INPUT_BYTES + 1, 0x20)
const refusal = await dryRun({ file: '-' }, { stdin: Readable.from([over]), stdout: { write: () => 0 }, stderr: { write: () => 0 } }).then(
  () => 'accepted',
  (error: Error) => error.message,
)
console.log(`input of ${MAX_INPUT_BYTES / 1024 / 1024} MiB + 1 byte: "${refusal}" after ${(performance.now() - refusedAt).toFixed(0)} ms`)
