// `mirrorhook rewrite IMAGE...`: one line per image, the result or why it is kept.
import type { Command } from 'commander'
import { decideImage } from '../core/rewrite.js'
import { withAllowlistsOnce } from '../mirrors/allowlists.js'
import { loadConfig } from '../config/load.js'
import { configOnlyView, loadState, type StateSource, viewFor } from '../reachability/cli.js'
import { describeDecision } from './common.js'

async function rewrite(images: string[], options: { config?: string } & StateSource): Promise<void> {
  const { policy } = await loadConfig(options.config)
  // The decision as the server would take it now, with the evidence it has.
  const learned = options.url || options.fromCluster ? viewFor(policy, await loadState(policy, options)) : configOnlyView(policy)
  // The mirrors' allowlists as they read now.
  const reachability = await withAllowlistsOnce(policy, learned, (line) => process.stderr.write(`${line}\n`))
  for (const image of images) process.stdout.write(`${describeDecision(decideImage(image, policy, reachability))}\n`)
}

export function registerRewrite(program: Command): void {
  program
    .command('rewrite')
    .description('show what mirrorhook does with each image reference')
    .argument('<image...>', 'image references as written in a Pod spec')
    .option('-c, --config <file>', 'configuration file (YAML)')
    .option('--url <url>', 'use the learned state of a running server (its metrics listener, e.g. http://127.0.0.1:9090)')
    .option('--from-cluster', 'use the learned state kept in the cluster (the ConfigMap, through the kubeconfig)')
    .action(async (images: string[], opts) => rewrite(images, { config: opts.config, url: opts.url, fromCluster: opts.fromCluster }))
}
