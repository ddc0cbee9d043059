// Bounds the review data held in memory at once. A review reserves its declared size
// before its body is read; when the budget is spent it waits, first come first served,
// with its body left in the socket (TCP flow control holds the sender back). Too many
// waiting reviews are refused at once instead of queueing without end.
export interface Reservation {
  // Resolves true once the bytes are reserved, false when cancelled first.
  readonly granted: Promise<boolean>
  // Gives the bytes back (or leaves the queue); safe to call more than once.
  release(): void
}

interface Waiter {
  bytes: number
  grant: (ok: boolean) => void
  state: 'waiting' | 'granted' | 'done'
}

export class ReviewBudget {
  private used = 0
  private readonly queue: Waiter[] = []

  constructor(
    readonly capacityBytes: number,
    readonly maxWaiting: number,
  ) {}

  get bytesInUse(): number {
    return this.used
  }

  get waiting(): number {
    return this.queue.length
  }

  /** Reserves `bytes`, or returns undefined when the waiting line is full. */
  reserve(bytes: number): Reservation | undefined {
    const waiter: Waiter = { bytes, grant: () => undefined, state: 'waiting' }
    const granted = new Promise<boolean>((resolve) => (waiter.grant = resolve))
    if (this.queue.length === 0 && this.fits(bytes)) this.take(waiter)
    else if (this.queue.length >= this.maxWaiting) return undefined
    else this.queue.push(waiter)
    return { granted, release: () => this.release(waiter) }
  }

  // One review always fits, whatever its size: the body limit bounds it.
  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.capacityBytes
  }

  private take(waiter: Waiter): void {
    this.used += waiter.bytes
    waiter.state = 'granted'
    waiter.grant(true)
  }

  private release(waiter: Waiter): void {
    if (waiter.state === 'done') return
    if (waiter.state === 'granted') this.used -= waiter.bytes
    else {
      this.queue.splice(this.queue.indexOf(waiter), 1)
      waiter.grant(false)
    }
    waiter.state = 'done'
    while (this.queue.length > 0 && this.fits(this.queue[0]!.bytes)) this.take(this.queue.shift()!)
  }
}
