// JSON logs with pino; one logger per process, children carry request context.
import { pino, type Logger, type DestinationStream } from 'pino'

export function createLogger(level = process.env.LOG_LEVEL ?? 'info', destination?: DestinationStream): Logger {
  return pino({ name: 'mirrorhook', level, base: { name: 'mirrorhook' } }, destination)
}
