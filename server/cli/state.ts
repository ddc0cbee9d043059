// `mirrorhook state`: each registry with its state, the evidence and since when; each mirror
// with its health, its allowlist and its refusals.
import { type Command, Option } from 'commander'
import { loadConfig } from '../config/load.js'
import { mirrorStates } from '../mirrors/state.js'
import { formatState, loadState, type StateSource, viewFor } from '../reachability/cli.js'

async function state(options: { config?: string; output: string } & StateSource): Promise<void> {
  const { policy } = await loadConfig(options.config)
  const loaded = await loadState(policy, options)
  // The ConfigMap holds no per-mirror summary: made here from the config and the stored state.
  loaded.snapshot.mirrors ??= mirrorStates(policy, viewFor(policy, loaded), loaded.snapshot.refusals, undefined, Date.now())
  if (options.output === 'json') process.stdout.write(`${JSON.stringify(loaded.snapshot, null, 2)}\n`)
  else process.stdout.write(formatState(loaded, [...policy.unreachable]))
}

export function registerState(program: Command): void {
  program
    .command('state')
    .description('list each registry with its state, the evidence and since when')
    .option('--url <url>', 'ask a running server (its metrics listener, e.g. http://127.0.0.1:9090); default: read the ConfigMap')
    .option('-c, --config <file>', 'configuration file (YAML): where the ConfigMap is, the static unreachable list')
    .addOption(
      new Option(
        '-n, --namespace <namespace>',
        "the ConfigMap's namespace (default: reachability.persistence.namespace, POD_NAMESPACE, mirrorhook)",
      ),
    )
    .option('--configmap <name>', 'the ConfigMap (default: reachability.persistence.configMap)')
    .addOption(new Option('-o, --output <format>', 'table or json').choices(['table', 'json']).default('table'))
    .action(async (opts) =>
      state({
        config: opts.config,
        url: opts.url,
        namespace: opts.namespace,
        configMap: opts.configmap,
        output: opts.output,
        fromCluster: !opts.url,
      }),
    )
}
