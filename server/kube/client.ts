// API clients from client-node, all made here: one keep-alive connection pool per process
// (client-node would open a new TLS connection for every request) and a timeout on every
// request, so a hung API server cannot hold a write forever.
import https from 'node:https'
import { createConfiguration, type KubeConfig, ServerConfiguration, type Configuration, type RequestContext } from '@kubernetes/client-node'

export const REQUEST_TIMEOUT_MS = 15_000

export interface ClientOptions {
  timeoutMs?: number
  // Connections open at once to the API server.
  maxSockets?: number
}

const agents = new WeakMap<KubeConfig, Promise<https.Agent | undefined>>()

// The TLS material kubectl would use, on an agent that keeps connections open. Only for plain
// HTTPS: a kubeconfig with a proxy keeps client-node's own agent.
function sharedAgent(kubeConfig: KubeConfig, maxSockets: number): Promise<https.Agent | undefined> {
  let agent = agents.get(kubeConfig)
  if (!agent) {
    agent = (async () => {
      const cluster = kubeConfig.getCurrentCluster()
      if (!cluster?.server.startsWith('https:') || cluster.proxyUrl) return undefined
      const opts: https.RequestOptions = {}
      await kubeConfig.applyToHTTPSOptions(opts)
      return new https.Agent({
        keepAlive: true,
        maxSockets,
        ca: opts.ca,
        cert: opts.cert,
        key: opts.key,
        pfx: opts.pfx,
        passphrase: opts.passphrase,
        servername: opts.servername,
        ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
      })
    })()
    agents.set(kubeConfig, agent)
  }
  return agent
}

function configuration(kubeConfig: KubeConfig, options: ClientOptions): Configuration {
  const cluster = kubeConfig.getCurrentCluster()
  if (!cluster) throw new Error('the kubeconfig has no current cluster')
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS
  const maxSockets = options.maxSockets ?? 16
  return createConfiguration({
    baseServer: new ServerConfiguration(cluster.server, {}),
    authMethods: { default: kubeConfig },
    promiseMiddleware: [
      {
        // Runs after the credentials were applied (a rotated token is read again by client-node).
        pre: async (context: RequestContext) => {
          const agent = await sharedAgent(kubeConfig, maxSockets)
          if (agent) {
            // The pool is shared: it grows to what its busiest client asked for.
            agent.maxSockets = Math.max(agent.maxSockets, maxSockets)
            context.setAgent(agent)
          }
          const signal = context.getSignal()
          const timeout = AbortSignal.timeout(timeoutMs)
          context.setSignal(signal ? AbortSignal.any([signal, timeout]) : timeout)
          return context
        },
        post: async (response) => response,
      },
    ],
  })
}

/** A client-node API class (CoreV1Api, CustomObjectsApi, ...) on the shared connection pool. */
export function apiClient<T>(kubeConfig: KubeConfig, api: new (configuration: Configuration) => T, options: ClientOptions = {}): T {
  return new api(configuration(kubeConfig, options))
}

/** Closes the pooled connections (at shutdown). */
export async function closeClients(kubeConfig: KubeConfig): Promise<void> {
  ;(await agents.get(kubeConfig))?.destroy()
  agents.delete(kubeConfig)
}
