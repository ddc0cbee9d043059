// Bounds the review data held in memory at once. A review reserves its declared size
// before its body is read; when the budget is spent it waits, first come first served,
// with its body left in the socket (TCP flow control holds the sender back). Too many
// waiting reviews are refused at once instead of queueing without end.
export interface Reservation {
  // True when the bytes were reserved at once (nothing to wait for: the common case).
  readonly grantedAtOnce: boolean
  // Resolves true once the bytes are reserved, false when cancelled first.
  readonly granted: Promise<boolean>
  // Gives the bytes back (or leaves the queue); safe to call more than once.
  release(): void
}

class Waiter implements Reservation {
  state: 'waiting' | 'granted' | 'done' = 'waiting'
  readonly grantedAtOnce: boolean
  // Set once decided; the promise is made only when someone waits.
  private outcome: boolean | undefined
  private resolve: ((ok: boolean) => void) | undefined
  private promise: Promise<boolean> | undefined

  constructor(
    private readonly budget: ReviewBudget,
    readonly bytes: number,
    atOnce: boolean,
  ) {
    this.grantedAtOnce = atOnce
  }

  get granted(): Promise<boolean> {
    this.promise ??=
      this.outcome === undefined ? new Promise<boolean>((resolve) => (this.resolve = resolve)) : Promise.resolve(this.outcome)
    return this.promise
  }

  grant(ok: boolean): void {
    if (this.outcome !== undefined) return
    this.outcome = ok
    this.resolve?.(ok)
  }

  release(): void {
    this.budget.release(this)
  }
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
    if (this.queue.length === 0 && this.fits(bytes)) {
      const waiter = new Waiter(this, bytes, true)
      this.take(waiter)
      return waiter
    }
    if (this.queue.length >= this.maxWaiting) return undefined
    const waiter = new Waiter(this, bytes, false)
    this.queue.push(waiter)
    return waiter
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

  /** @internal Through `Reservation.release`. */
  release(waiter: Waiter): void {
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
