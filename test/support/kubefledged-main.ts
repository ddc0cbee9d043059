// The kube-fledged stand-in (test/support/kubefledged.ts) as a process of its own, for
// `npm run cluster:up`:
//   tsx test/support/kubefledged-main.ts --kubeconfig F [--namespace kube-fledged]
//       [--image-pull-deadline-seconds 300] [--image-cache-refresh-seconds 900]
import { startKubeFledged } from './kubefledged.js'

const args = process.argv.slice(2)
const opt = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : undefined
}
const kubeconfigPath = opt('kubeconfig') ?? process.env.KUBECONFIG
if (!kubeconfigPath) {
  process.stderr.write('kube-fledged stand-in: --kubeconfig (or KUBECONFIG) is required\n')
  process.exit(2)
}
const seconds = (name: string) => (opt(name) === undefined ? undefined : Number(opt(name)) * 1000)
const kf = await startKubeFledged({
  kubeconfigPath,
  namespace: opt('namespace'),
  imagePullDeadlineMs: seconds('image-pull-deadline-seconds'),
  refreshFrequencyMs: seconds('image-cache-refresh-seconds'),
  busyboxImage: process.env.BUSYBOX_IMAGE,
  log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
})
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.on(sig, () => {
    void kf.stop().finally(() => process.exit(0))
  })
}
