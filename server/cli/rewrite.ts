// `mirrorhook rewrite IMAGE...`: one line per image, the result or why it is kept.
import { type Command, Option } from 'commander'
import { decideContainer, type PodContext } from '../core/pullrules.js'
import { withAllowlistsOnce } from '../mirrors/allowlists.js'
import { loadConfig } from '../config/load.js'
import { configOnlyView, loadState, type StateSource, viewFor } from '../reachability/cli.js'
import { describeDecision } from './common.js'

interface RewriteOptions {
  config?: string
  pullPolicy?: string
  podPullSecrets?: boolean
}

async function rewrite(images: string[], options: RewriteOptions & StateSource): Promise<void> {
  const { policy } = await loadConfig(options.config)
  // The decision as the server would take it now, with the evidence it has.
  const learned = options.url || options.fromCluster ? viewFor(policy, await loadState(policy, options)) : configOnlyView(policy)
  // The mirrors' allowlists as they read now.
  const reachability = await withAllowlistsOnce(policy, learned, (line) => process.stderr.write(`${line}\n`))
  // A container of a new Pod in an opted-in namespace (whose mirror pull Secret copies are assumed in place).
  const pod: PodContext = {
    canAddPullSecrets: true,
    pullSecrets: [],
    pullSecretsListValid: true,
    sourcePullSecrets: options.podPullSecrets ? ["(the Pod's own)"] : [],
    kubeFledgedPullPod: false,
  }
  for (const image of images) {
    const container = { name: 'c', image, ...(options.pullPolicy ? { imagePullPolicy: options.pullPolicy } : {}) }
    const { decision } = decideContainer({ field: 'containers', container, image, pod }, policy, reachability)
    process.stdout.write(`${describeDecision(decision)}\n`)
  }
}

export function registerRewrite(program: Command): void {
  program
    .command('rewrite')
    .description('show what mirrorhook does with each image reference')
    .argument('<image...>', 'image references as written in a Pod spec')
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option('--url <url>', 'use the learned state of a running server (its metrics listener, e.g. http://127.0.0.1:9090)')
    .option('--from-cluster', 'use the learned state kept in the cluster (the ConfigMap, through the kubeconfig)')
    .addOption(
      new Option('--pull-policy <policy>', "the container's imagePullPolicy (default: the API server's default for the tag)").choices([
        'Always',
        'IfNotPresent',
        'Never',
      ]),
    )
    .option('--pod-pull-secrets', 'as for a Pod that has imagePullSecrets of its own (pull.privateImages)')
    .action(async (images: string[], opts) =>
      rewrite(images, {
        config: opts.config,
        url: opts.url,
        fromCluster: opts.fromCluster,
        pullPolicy: opts.pullPolicy,
        podPullSecrets: opts.podPullSecrets === true,
      }),
    )
}
