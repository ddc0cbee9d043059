// The `mirrorhook` command line: this file registers the commands, one file each does one.
import { Command } from 'commander'
import { registerDryRun } from './dry-run.js'
import { registerPrewarm } from './prewarm.js'
import { registerRewrite } from './rewrite.js'
import { registerServe } from './serve.js'
import { registerState } from './state.js'

export function buildCli(): Command {
  const program = new Command('mirrorhook')
    .description('Rewrites Pod images to a registry mirror at admission time, and pre-pulls them with kube-fledged.')
    .showHelpAfterError()
  registerServe(program)
  registerDryRun(program)
  registerRewrite(program)
  registerState(program)
  registerPrewarm(program)
  return program
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildCli().parseAsync(argv)
    return 0
  } catch (error) {
    // Configuration and input problems (ConfigError, CliError) and anything else: the message, no stack.
    process.stderr.write(`mirrorhook: ${(error as Error).message}\n`)
    return 1
  }
}
