// What `dproxy token` and `dproxy env --for` do: create, rotate, list and
// revoke client tokens in the state dir's tokens.json (credentials/tokens.ts),
// with the HMAC key from the credential store. Everything works on the files,
// so no daemon needs to run; a running daemon sees the change within about a
// second. When each token was last used is the daemon's knowledge: `list`
// asks the daemon serving the cache dir for it (its status), and otherwise
// reads what the daemon last wrote (tokens-used.json).

import type { CredentialStore } from '../credentials/credential.js'
import { TokenFile, tokenKey, type CreatedToken, type TokenInfo } from '../credentials/tokens.js'
import { parseDuration } from '../config/units.js'
import { DproxyError } from '../errors.js'
import { findDaemon } from './admin-client.js'

export interface TokenPlace {
  stateDir: string
  cacheDir: string
  /** Opens the credential store (where the HMAC key lives) when a secret must be made or checked. */
  credentials: () => Promise<CredentialStore>
}

/** `--expires` in milliseconds: a duration like '90d'; 'never' or '0' for none. */
export function parseExpiry(text: string | undefined): number | undefined {
  if (text === undefined || text === 'never') return undefined
  const ms = parseDuration(text, 'expires')
  return ms === 0 ? undefined : ms
}

export async function createToken(place: TokenPlace, name: string, opts: { expires?: string; repos?: string } = {}): Promise<CreatedToken> {
  // Checked before the keychain is asked: a typo costs nothing.
  const expiresMs = parseExpiry(opts.expires)
  const file = new TokenFile(place.stateDir)
  const key = await tokenKey(await place.credentials(), { create: true })
  return file.create(key!, name, { expiresMs, repos: opts.repos })
}

export async function rotateToken(place: TokenPlace, name: string): Promise<CreatedToken> {
  const file = new TokenFile(place.stateDir)
  if (!(await file.has(name))) throw new DproxyError('USAGE', `no token named '${name}'`)
  const key = await tokenKey(await place.credentials(), { create: true })
  return file.rotate(key!, name)
}

export async function tokenExists(place: Pick<TokenPlace, 'stateDir'>, name: string): Promise<boolean> {
  return new TokenFile(place.stateDir).has(name)
}

/** True when the token existed. */
export async function revokeToken(place: Pick<TokenPlace, 'stateDir'>, name: string): Promise<boolean> {
  return new TokenFile(place.stateDir).revoke(name)
}

/** Every token, with the last use the running daemon knows (else the one it last wrote down). */
export async function listTokens(place: Pick<TokenPlace, 'stateDir' | 'cacheDir'>): Promise<TokenInfo[]> {
  const daemon = await findDaemon(place.cacheDir, { stateDir: place.stateDir, timeoutMs: 2000 }).catch(() => undefined)
  const fresher: Record<string, string> = {}
  for (const c of daemon?.status.clients ?? []) if (c.lastUsed !== null) fresher[c.name] = c.lastUsed
  return new TokenFile(place.stateDir).list(fresher)
}
