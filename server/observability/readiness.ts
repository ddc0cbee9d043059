// Readiness: each component reports whether it blocks readiness and why; shutdown blocks it too.
export class Readiness {
  private readonly blockers = new Map<string, string>()
  private shuttingDown = false

  block(component: string, reason: string): void {
    this.blockers.set(component, reason)
  }

  clear(component: string): void {
    this.blockers.delete(component)
  }

  beginShutdown(): void {
    this.shuttingDown = true
  }

  get state(): { ready: boolean; reasons: string[] } {
    const reasons = [...this.blockers.entries()].map(([c, r]) => `${c}: ${r}`)
    if (this.shuttingDown) reasons.unshift('shutting down')
    return { ready: reasons.length === 0, reasons }
  }
}
