// What the commands share: the error that ends a command with a message, and how a decision reads.
import type { ContainerDecision } from '../core/pullrules.js'

/** A problem the operator can fix (a missing file, bad input): printed without a stack, exit 1. */
export class CliError extends Error {}

export function describeDecision(decision: ContainerDecision): string {
  return decision.action === 'rewrite'
    ? `${decision.original} -> ${decision.rewritten} (${decision.reason})`
    : `${decision.original} kept: ${decision.reason}`
}
