// Which images Pods use: admissions and periodic reads of the running Pods.
import type { Usage, UsageSource } from './reconciler.js'

/** Which images Pods use: admissions and periodic Pod listings. */
export class UsageTracker implements UsageSource {
  private readonly seen = new Map<string, number>()
  private readonly admitted = new Map<string, number>()
  private readonly created = new Map<string, number>()
  private readonly originals = new Map<string, string>()
  // Pre-warmed images: in use, whether or not a Pod runs them, until the time given.
  private readonly pins = new Map<string, number>()
  private sweepStart?: number
  private sweepAt?: number

  constructor(
    private readonly purgeAfterMs: number,
    private readonly sweepMs: number,
  ) {}

  touch(image: string, original: string | undefined, now: number, source: 'admission' | 'sweep' = 'admission'): void {
    this.seen.set(image, now)
    if (source === 'admission') this.admitted.set(image, now)
    // The first spelling seen is the one recorded on the object.
    if (original !== undefined && original !== image && !this.originals.has(image)) this.originals.set(image, original)
  }

  /** Counts the image as in use until `untilMs` (pre-warm: until after its next run). */
  pin(image: string, original: string | undefined, untilMs: number): void {
    if (untilMs > (this.pins.get(image) ?? -Infinity)) this.pins.set(image, untilMs)
    if (original !== undefined && original !== image && !this.originals.has(image)) this.originals.set(image, original)
  }

  // Whoever created the cache saw the image in use then.
  noteCreated(image: string, at: number): void {
    if (at > (this.created.get(image) ?? -Infinity)) this.created.set(image, at)
  }

  forgetCreated(image: string): void {
    this.created.delete(image)
  }

  sweepDone(startedAt: number, inUse: ReadonlyMap<string, string>, now: number): void {
    for (const [image, original] of inUse) this.touch(image, original, now, 'sweep')
    this.sweepStart = startedAt
    this.sweepAt = now
    const keep = 2 * Math.max(this.purgeAfterMs, this.sweepMs, 3_600_000)
    for (const [image, at] of this.seen) {
      if (now - at > keep) {
        this.seen.delete(image)
        this.originals.delete(image)
      }
    }
    for (const [image, at] of this.admitted) if (now - at > this.admissionGraceMs) this.admitted.delete(image)
    for (const [image, until] of this.pins) if (until <= now) this.pins.delete(image)
  }

  usage(image: string, now: number): Usage {
    const seen = this.seen.get(image)
    const created = this.created.get(image)
    // An admitted Pod may be stored only after a sweep listed the Pods: admission alone counts for a while.
    const admitted = this.admitted.get(image)
    const pinned = (this.pins.get(image) ?? -Infinity) > now
    const inUse =
      pinned ||
      (admitted !== undefined && now - admitted <= this.admissionGraceMs) ||
      (this.sweepStart === undefined ? seen !== undefined : Math.max(seen ?? -Infinity, created ?? -Infinity) >= this.sweepStart)
    const last = Math.max(seen ?? -Infinity, created ?? -Infinity)
    return {
      inUse,
      usageKnown: this.sweepAt !== undefined && now - this.sweepAt <= 2 * this.sweepMs + 60_000,
      recentlyUsed: pinned || now - last < this.purgeAfterMs,
    }
  }

  original(image: string): string | undefined {
    return this.originals.get(image)
  }

  /** Until when the image is pinned by pre-warm, if it is. */
  pinnedUntil(image: string): number | undefined {
    return this.pins.get(image)
  }

  // Three sweeps: a Pod is stored seconds after its admission, so one of them lists it.
  private get admissionGraceMs(): number {
    return 3 * this.sweepMs
  }
}
