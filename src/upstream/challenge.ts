// Parses the WWW-Authenticate header a registry sends with a 401. Registries
// put a Bearer challenge there whose realm is the token service to ask; the
// parameters are a comma-separated list of key="quoted value" pairs (RFC 9110
// auth-param), and values may contain commas inside the quotes.

export interface Challenge {
  scheme: string
  params: Record<string, string>
}

export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined
  const m = /^\s*([A-Za-z][A-Za-z0-9._~+/-]*)\s*(.*)$/s.exec(header)
  if (!m) return undefined
  const scheme = m[1]!.toLowerCase()
  const params: Record<string, string> = {}
  const paramRe = /([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)/gy
  const rest = m[2]!
  let pos = 0
  while (pos < rest.length) {
    while (rest[pos] === ',' || rest[pos] === ' ') pos++
    if (pos >= rest.length) break
    paramRe.lastIndex = pos
    const p = paramRe.exec(rest)
    if (!p) break
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3]!
    pos = paramRe.lastIndex
  }
  return { scheme, params }
}
