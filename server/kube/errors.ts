// One reading of Kubernetes API failures, whatever raised them: client-node's ApiException
// (`code`, `body`, `headers`), its Watch (`statusCode`), or no answer at all.

/** The HTTP status of a failed API call, or undefined when there was no answer. */
export function statusOf(error: unknown): number | undefined {
  const e = error as { status?: unknown; statusCode?: unknown; code?: unknown }
  for (const v of [e?.status, e?.statusCode, e?.code]) if (typeof v === 'number') return v
  return undefined
}

export class ApiError extends Error {
  constructor(
    // 0: no HTTP answer (connection refused, reset, timeout).
    readonly status: number,
    message: string,
    readonly reason?: string,
    readonly retryAfterMs?: number,
    readonly details?: { name?: string; kind?: string },
  ) {
    super(message)
    this.name = 'ApiError'
  }

  /** Worth retrying as is: throttling, server errors, no answer. */
  get transient(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500
  }
}

interface StatusBody {
  message?: string
  reason?: string
  details?: { name?: string; kind?: string }
}

function statusBody(body: unknown): StatusBody | string | undefined {
  if (typeof body === 'string') {
    try {
      const parsed: unknown = JSON.parse(body)
      return typeof parsed === 'object' && parsed !== null ? (parsed as StatusBody) : body
    } catch {
      return body
    }
  }
  return typeof body === 'object' && body !== null ? (body as StatusBody) : undefined
}

/** Any failure of an API call as an ApiError: status, the API server's reason and message, Retry-After. */
export function apiErrorOf(error: unknown, what: string): ApiError {
  if (error instanceof ApiError) return error
  const status = statusOf(error)
  const e = error as { body?: unknown; headers?: Record<string, string>; message?: string }
  if (status === undefined || status < 100) {
    // A network failure: node's errors carry a string `code` (ECONNREFUSED), aborts a name.
    const cause = (error as { cause?: { message?: string } })?.cause?.message
    return new ApiError(0, `${what}: ${e?.message ?? String(error)}${cause ? ` (${cause})` : ''}`)
  }
  const body = statusBody(e.body)
  const s = typeof body === 'object' ? body : {}
  const text = typeof body === 'string' ? body.slice(0, 200) : (s.message ?? '')
  const retryAfter = Number(e.headers?.['retry-after'])
  return new ApiError(
    status,
    `${what}: ${status} ${text}`.trim(),
    s.reason,
    Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter * 1000 : undefined,
    s.details,
  )
}
