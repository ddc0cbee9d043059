// JSON logs with pino; one logger per process, children carry request context.
//
// Standard output is written asynchronously (the admission path never waits on a pipe), in
// batches (one write per 32 KiB or 200 ms instead of one per line), through a bounded buffer: when
// the reader falls behind by more than LOG_QUEUE_MAX_BYTES, new lines are dropped and counted
// instead of queued, so memory stays bounded under any load. The queue and the drops are exported
// as metrics (mirrorhook_log_queue_bytes, mirrorhook_log_dropped_total).
import { EventEmitter } from 'node:events'
import { close, fsync, writeSync, writev } from 'node:fs'
import { pino, type Logger, type DestinationStream } from 'pino'

export const LOG_QUEUE_MAX_BYTES = 4 * 1024 * 1024
// Lines are written in batches of this many bytes (fewer, larger writes: each one is a hand-over to a
// libuv thread and a wake-up of the reader), or at the latest after LOG_FLUSH_MS.
export const LOG_BATCH_BYTES = 32 * 1024
export const LOG_FLUSH_MS = 200
// A busy destination (EAGAIN) is tried again after this long.
const BUSY_RETRY_MS = 100

export interface LogStats {
  // Bytes accepted but not yet written.
  readonly queuedBytes: number
  readonly droppedLines: number
  readonly droppedBytes: number
}

let queued: () => number = () => 0
let droppedLines = 0
let droppedBytes = 0

/** The process's log destination figures (zero until `stdoutDestination` was created). */
export function logStats(): LogStats {
  return { queuedBytes: queued(), droppedLines, droppedBytes }
}

// Destinations with lines still queued when the process exits write them synchronously then.
const open = new Set<BoundedDestination>()
let exitHookInstalled = false
function flushAllOnExit(): void {
  for (const d of open) d.flushSync()
}

/**
 * A file descriptor written in batches by asynchronous writes, with a bounded queue. Each line is
 * encoded once, as it comes, into the batch being filled (a reused 32 KiB buffer): no line string
 * stays on the heap until its batch is written, nothing is measured or copied again.
 * Events: `ready` (next tick), `drop` (a line refused), `close` (after `end()`).
 */
export class BoundedDestination extends EventEmitter implements DestinationStream {
  // The batch being filled and its bytes used; batches filled and waiting for their write.
  private filling: Buffer | undefined
  private filled = 0
  private readonly waiting: Buffer[] = []
  // A batch-sized buffer whose write completed, for the next batch.
  private spare: Buffer | undefined
  // Bytes accepted and not yet handed to a write.
  private pendingBytes = 0
  // Bytes of the write under way (until it completes).
  private writingBytes = 0
  private writing = false
  private ending = false
  private closed = false
  private readonly timer: NodeJS.Timeout | undefined

  constructor(
    private readonly fd: number,
    private readonly maxQueueBytes: number,
    private readonly batchBytes: number,
  ) {
    super()
    if (batchBytes > 0) {
      this.timer = setInterval(() => this.flush(), LOG_FLUSH_MS)
      this.timer.unref()
    }
    open.add(this)
    if (!exitHookInstalled) {
      exitHookInstalled = true
      process.once('exit', flushAllOnExit)
    }
    process.nextTick(() => this.emit('ready'))
  }

  /** Bytes accepted and not yet written. */
  get queuedBytes(): number {
    return this.pendingBytes + this.writingBytes
  }

  write(line: string): boolean {
    if (this.closed || this.ending) return false
    // A UTF-16 unit is at most three bytes of UTF-8: measured exactly only near the bound.
    const most = line.length * 3
    const queued = this.pendingBytes + this.writingBytes
    if (queued + most > this.maxQueueBytes) {
      const bytes = Buffer.byteLength(line)
      if (queued + bytes > this.maxQueueBytes) {
        droppedLines += 1
        droppedBytes += bytes
        if (this.listenerCount('drop') > 0) this.emit('drop', line)
        return false
      }
    }
    if (this.filling === undefined || this.filled + most > this.filling.length) {
      this.seal()
      // Unpooled: a batch-sized buffer is reused once its write completes (writeFrom).
      this.filling = most <= this.batchBytes && this.spare ? this.spare : Buffer.allocUnsafeSlow(Math.max(this.batchBytes, most))
      if (this.filling === this.spare) this.spare = undefined
    }
    const bytes = this.filling.write(line, this.filled)
    this.filled += bytes
    this.pendingBytes += bytes
    if (!this.writing && this.pendingBytes >= this.batchBytes) this.writeBatch()
    return true
  }

  // The batch being filled joins the ones waiting for their write.
  private seal(): void {
    if (this.filling === undefined) return
    if (this.filled > 0) this.waiting.push(this.filling.subarray(0, this.filled))
    else if (this.filling.length === this.batchBytes) this.spare ??= this.filling
    this.filling = undefined
    this.filled = 0
  }

  /** Starts writing what is queued, if no write is under way. */
  flush(): void {
    if (!this.writing && this.pendingBytes > 0) this.writeBatch()
  }

  // Hands everything queued to one gathered write: when the loop is busy, each write's callback
  // comes late, so a write per batch could not keep up with a busy server.
  private writeBatch(): void {
    this.seal()
    const batches = this.waiting.splice(0)
    if (batches.length === 0) return
    let bytes = 0
    for (const data of batches) bytes += data.length
    this.pendingBytes -= bytes
    this.writingBytes = bytes
    this.writing = true
    this.writeFrom(batches)
  }

  private writeFrom(batches: Buffer[]): void {
    writev(this.fd, batches, null, (error, n) => {
      if (error) {
        const code = (error as NodeJS.ErrnoException).code
        if (code === 'EAGAIN' || code === 'EBUSY') {
          setTimeout(() => this.writeFrom(batches), BUSY_RETRY_MS).unref()
          return
        }
        // EPIPE and the like: the reader is gone; what cannot be written is counted as dropped.
        droppedBytes += this.writingBytes
        droppedLines += 1
      } else {
        this.writingBytes -= n
        const rest = unwritten(batches, n)
        for (let i = 0; i < batches.length - rest.length; i++) this.recycle(batches[i]!)
        if (rest.length > 0) return this.writeFrom(rest)
      }
      this.writing = false
      this.writingBytes = 0
      if (this.pendingBytes > 0 && (this.pendingBytes >= this.batchBytes || this.waiting.length > 0 || this.ending)) this.writeBatch()
      else if (this.ending) this.finish()
    })
  }

  // A batch-sized buffer whose bytes were written serves the next batch.
  private recycle(data: Buffer): void {
    if (this.spare === undefined && data.byteOffset === 0 && data.buffer.byteLength === this.batchBytes)
      this.spare = Buffer.from(data.buffer, 0, this.batchBytes)
  }

  /** Writes what is queued and not yet under way, synchronously (process exit). */
  flushSync(): void {
    if (this.closed || this.pendingBytes === 0) return
    this.seal()
    const batches = this.waiting.splice(0)
    this.pendingBytes = 0
    for (const data of batches) {
      for (let offset = 0; offset < data.length;) {
        try {
          offset += writeSync(this.fd, data, offset, data.length - offset)
        } catch (error) {
          const code = (error as NodeJS.ErrnoException).code
          if (code !== 'EAGAIN' && code !== 'EBUSY') return
        }
      }
    }
  }

  /** Writes what is queued, then closes the file (standard output and error stay open). */
  end(): void {
    if (this.ending) return
    this.ending = true
    if (this.timer) clearInterval(this.timer)
    if (this.writing) return
    if (this.pendingBytes > 0) this.writeBatch()
    else this.finish()
  }

  private finish(): void {
    this.closed = true
    open.delete(this)
    const done = () => this.emit('close')
    if (this.fd === 1 || this.fd === 2) return void process.nextTick(done)
    fsync(this.fd, () => close(this.fd, done))
  }
}

/** What is left of `batches` after their first `written` bytes were written. */
export function unwritten(batches: readonly Buffer[], written: number): Buffer[] {
  const rest: Buffer[] = []
  for (const data of batches) {
    if (written >= data.length) written -= data.length
    else {
      rest.push(written > 0 ? data.subarray(written) : data)
      written = 0
    }
  }
  return rest
}

/** Asynchronous, bounded standard output. */
export function stdoutDestination(maxQueueBytes = LOG_QUEUE_MAX_BYTES, fd = 1, batchBytes = LOG_BATCH_BYTES): BoundedDestination {
  const destination = new BoundedDestination(fd, maxQueueBytes, batchBytes)
  queued = () => destination.queuedBytes
  return destination
}

export function createLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  return pino({ name: 'mirrorhook', level, base: { name: 'mirrorhook' } }, destination ?? stdoutDestination())
}

/** Clips untrusted text written to the log: at most `max` characters, marked when cut. */
export function clipForLog(text: string, max = 256): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length} chars)`
}
