// JSON logs with pino; one logger per process, children carry request context.
//
// Standard output is written asynchronously (the admission path never waits on a pipe), in
// batches (one write per 8 KiB or 200 ms instead of one per line), through a bounded buffer: when the reader falls behind by more than LOG_QUEUE_MAX_BYTES, new lines are
// dropped and counted instead of queued, so memory stays bounded under any load. The queue and
// the drops are exported as metrics (mirrorhook_log_queue_bytes, mirrorhook_log_dropped_total).
import { pino, type Logger, type DestinationStream } from 'pino'

export const LOG_QUEUE_MAX_BYTES = 4 * 1024 * 1024
// Lines are written in batches of this many bytes, or at the latest after LOG_FLUSH_MS.
export const LOG_BATCH_BYTES = 8 * 1024
export const LOG_FLUSH_MS = 200

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

/** Asynchronous, bounded standard output (pino's SonicBoom with `maxLength`). */
export function stdoutDestination(maxQueueBytes = LOG_QUEUE_MAX_BYTES, fd = 1, batchBytes = LOG_BATCH_BYTES): DestinationStream {
  const destination = pino.destination({
    fd,
    sync: false,
    minLength: batchBytes,
    periodicFlush: batchBytes > 0 ? LOG_FLUSH_MS : 0,
    maxLength: maxQueueBytes,
  })
  destination.on('drop', (data: string | Buffer) => {
    droppedLines += 1
    droppedBytes += typeof data === 'string' ? Buffer.byteLength(data) : data.length
  })
  // SonicBoom's count of bytes buffered and being written.
  queued = () => (destination as unknown as { _len?: number })._len ?? 0
  return destination
}

export function createLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  return pino({ name: 'mirrorhook', level, base: { name: 'mirrorhook' } }, destination ?? stdoutDestination())
}

/** Clips untrusted text written to the log: at most `max` characters, marked when cut. */
export function clipForLog(text: string, max = 256): string {
  return text.length <= max ? text : `${text.slice(0, max)}…(${text.length} chars)`
}
