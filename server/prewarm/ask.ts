// Asking the configured registries for the newest tags: a few questions at a time, per registry
// counted; a registry whose requests fail twice in a row is taken as down for the rest of the
// run (its remaining questions are not sent), and the next run asks again.
import { type Answer, questionKey, type TagQuestion } from './plan.js'
import type { TagResolver } from './registry-api.js'

export const DOWN_AFTER_ERRORS = 2

export type RegistryTally = {
  questions: number
  requests: number
  // Answered with a tag newer than the current one.
  newer: number
  // Answered: the current tag is the newest, or none qualifies.
  same: number
  errors: number
  // Set when the registry was taken as down: the first error.
  down?: string
}

export interface Asked {
  answers: Map<string, Answer>
  registries: Map<string, RegistryTally>
}

const clip = (s: string) => (s.length > 300 ? `${s.slice(0, 300)}…` : s)

export async function askRegistries(
  questions: readonly TagQuestion[],
  resolvers: ReadonlyMap<string, TagResolver>,
  concurrency: number,
): Promise<Asked> {
  const answers = new Map<string, Answer>()
  const registries = new Map<string, RegistryTally>()
  const tally = (r: string) => {
    let t = registries.get(r)
    if (!t) registries.set(r, (t = { questions: 0, requests: 0, newer: 0, same: 0, errors: 0 }))
    return t
  }
  const failures = new Map<string, { inARow: number; first?: string }>()
  let next = 0
  const worker = async () => {
    while (next < questions.length) {
      const q = questions[next++]!
      const t = tally(q.registry)
      t.questions++
      if (t.down !== undefined) {
        answers.set(questionKey(q), { error: `not asked: ${t.down}` })
        continue
      }
      const resolver = resolvers.get(q.registry)
      if (!resolver) {
        answers.set(questionKey(q), { error: 'no resolver for this registry' })
        continue
      }
      const f = failures.get(q.registry) ?? { inARow: 0 }
      failures.set(q.registry, f)
      try {
        const resolution = await resolver.newest(q.repository, q.currentTag)
        f.inARow = 0
        t.requests += resolution.requests
        if (resolution.newest && resolution.newest.tag !== (q.currentTag ?? 'latest')) t.newer++
        else t.same++
        answers.set(questionKey(q), { resolution })
      } catch (error) {
        const message = clip((error as Error).message ?? String(error))
        t.errors++
        f.inARow++
        f.first ??= message
        if (f.inARow >= DOWN_AFTER_ERRORS && t.down === undefined) t.down = f.first
        answers.set(questionKey(q), { error: message })
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, questions.length)) }, worker))
  return { answers, registries }
}
