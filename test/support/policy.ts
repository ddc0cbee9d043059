// The policy as `serve` compiles it from a configuration, and the problems a configuration is
// refused with, for the table tests of the policy and the decision.
import { resolveConfig, type ConfigInput } from '../../server/config/config.js'
import { ConfigError } from '../../server/core/config.js'
import { compilePolicy, type Policy } from '../../server/core/policy.js'

export const compileConfig = (input: ConfigInput): Policy => compilePolicy(resolveConfig(input, {}))

/** The problems `compileConfig` refuses the input with; none when it is accepted. Other errors are thrown. */
export function policyProblems(input: ConfigInput): string[] {
  try {
    compileConfig(input)
  } catch (e) {
    if (e instanceof ConfigError) return e.problems
    throw e
  }
  return []
}
