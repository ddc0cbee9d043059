// Finding the API server the way kubectl does: in-cluster service account,
// then KUBECONFIG, then ~/.kube/config. No API server is fine: mirrorhook
// still rewrites, it only cannot pre-pull or learn from the cluster.
import { existsSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import type { KubeConfig } from '@kubernetes/client-node'

const SERVICE_ACCOUNT_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount/token'

export interface FoundKubeConfig {
  kubeConfig: KubeConfig
  source: string
}

// The client library is loaded only once a configuration was found: without a cluster, start-up
// does not pay for it.
export async function findKubeConfig(env: NodeJS.ProcessEnv = process.env): Promise<FoundKubeConfig | undefined> {
  if (env.KUBERNETES_SERVICE_HOST && existsSync(SERVICE_ACCOUNT_TOKEN)) {
    const { KubeConfig } = await import('@kubernetes/client-node')
    const kc = new KubeConfig()
    kc.loadFromCluster()
    return { kubeConfig: kc, source: 'in-cluster service account' }
  }
  const paths = env.KUBECONFIG ? env.KUBECONFIG.split(':').filter(Boolean) : [join(homedir(), '.kube', 'config')]
  const first = paths.find((p) => existsSync(p))
  if (!first) return undefined
  const { KubeConfig } = await import('@kubernetes/client-node')
  const kc = new KubeConfig()
  kc.loadFromFile(first)
  if (!kc.getCurrentCluster()) return undefined
  return { kubeConfig: kc, source: first }
}
