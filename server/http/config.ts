// The `server:` section of the configuration: how long a connection may take at each
// stage, how long a shutdown may drain, and how much review data may be held at once.
import { z } from 'zod'

const MiB = 1024 * 1024

// The API server sends an AdmissionReview with the Pod as `object` and, on UPDATE, as
// `oldObject`. It refuses request bodies over 3 MiB (MaxRequestBodyBytes: twice etcd's
// 1.5 MiB request limit, for JSON that is stored as protobuf), so each copy is at most
// about 3 MiB of JSON; 64 KiB more covers the envelope (userInfo, options).
export const DEFAULT_BODY_LIMIT = 6 * MiB + 64 * 1024

const seconds = z.number().positive()

export const serverSchema = z
  .object({
    // A connection must finish its TLS handshake within this (HTTPS port).
    handshakeTimeoutSeconds: seconds.max(60).default(5),
    // Request line and headers must arrive within this, also on a fresh connection that sends nothing.
    headersTimeoutSeconds: seconds.max(60).default(5),
    // The whole request, body included, must arrive within this. The API server waits
    // `timeoutSeconds` (3 s in the shipped configuration, 30 s at most) for the answer.
    requestTimeoutSeconds: seconds.max(60).default(10),
    // An idle keep-alive connection is closed after this. The API server keeps idle
    // connections to webhooks for 90 s; closing later avoids racing its next request.
    idleTimeoutSeconds: seconds.max(600).default(95),
    // After the shutdown delay, in-flight requests get this long; then every connection is closed.
    drainTimeoutSeconds: seconds.max(300).default(10),
    // Largest AdmissionReview accepted (bytes); a bigger one is answered 413.
    bodyLimitBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(64 * MiB)
      .default(DEFAULT_BODY_LIMIT),
    // Review bodies held at once (declared Content-Length, or bodyLimitBytes when not declared).
    // Beyond it reviews wait, without reading their body, until earlier ones are answered. Two
    // maximal reviews, or hundreds of ordinary ones (a few KiB each); see test/bench/burst.ts.
    reviewBytesInFlight: z
      .number()
      .int()
      .min(64 * 1024)
      .max(1024 * MiB)
      .default(12 * MiB),
    // Reviews waiting for room; one more is answered 503 at once (the API server then admits
    // the Pod unchanged, as failurePolicy Ignore says).
    maxWaitingReviews: z.number().int().min(0).max(10_000).default(256),
  })
  .strict()
  .refine((s) => s.headersTimeoutSeconds <= s.requestTimeoutSeconds, {
    message: 'headersTimeoutSeconds must not exceed requestTimeoutSeconds',
    path: ['headersTimeoutSeconds'],
  })

export type ServerConfig = z.infer<typeof serverSchema>
