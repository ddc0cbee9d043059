// The self-managed pair as files, for readers outside the process (the HTTPS server of the
// same process takes it in memory, server/tls/dynamic-source.ts).
import { mkdir, readFile, readlink, rename, rm, symlink, writeFile, readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'

export interface TlsFiles {
  dir: string
  certFile: string
  keyFile: string
  caFile: string
}

const DATA_LINK = '..data'

/**
 * Writes the three files into a fresh folder and swaps one symlink, the way
 * kubelet updates Secret volumes: a reader never sees a certificate with the
 * other rotation's key. Returns false when the files already held this content.
 */
export async function writeTlsFiles(dir: string, content: { cert: string; key: string; ca: string }): Promise<boolean> {
  const abs = resolve(dir)
  await mkdir(abs, { recursive: true, mode: 0o700 })
  const files = { 'tls.crt': content.cert, 'tls.key': content.key, 'ca.crt': content.ca }
  const existing = await Promise.all(Object.keys(files).map((f) => readFile(join(abs, f), 'utf8').catch(() => undefined)))
  if (Object.values(files).every((text, i) => existing[i] === text)) return false

  const version = `..${new Date().toISOString().replace(/[:.]/g, '_')}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  await mkdir(join(abs, version), { mode: 0o700 })
  for (const [name, text] of Object.entries(files)) {
    await writeFile(join(abs, version, name), text, { mode: name === 'tls.key' ? 0o600 : 0o644 })
  }
  const previous = await readlink(join(abs, DATA_LINK)).catch(() => undefined)
  const tmpLink = join(abs, `${DATA_LINK}_tmp`)
  await rm(tmpLink, { force: true })
  await symlink(version, tmpLink)
  await rename(tmpLink, join(abs, DATA_LINK))
  for (const name of Object.keys(files)) {
    const link = join(abs, name)
    const target = await readlink(link).catch(() => undefined)
    if (target === join(DATA_LINK, name)) continue
    await rm(link, { force: true })
    await symlink(join(DATA_LINK, name), link)
  }
  // Old versions go; anything else in the folder is left alone.
  for (const entry of await readdir(abs)) {
    if (entry.startsWith('..') && entry !== DATA_LINK && entry !== version && entry !== previous && !entry.startsWith(`${DATA_LINK}_`)) {
      await rm(join(abs, entry), { recursive: true, force: true })
    }
  }
  if (previous && previous !== version) await rm(join(abs, previous), { recursive: true, force: true })
  return true
}
