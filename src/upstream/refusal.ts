// The words for an upstream that said no (401, 403, 404), written for the
// person who typed `docker pull`: which registry refused what, whether a
// login was used and which one (its source and user, never its secret), and
// the command that fixes it. The same text reaches the client (the OCI error
// message), the access log and `dproxy doctor`'s recent failures.
//
// Docker Hub answers 401 both for a private repository and for one that does
// not exist, so for Hub the message cannot tell them apart and says so.

import { DOCKER_HUB } from '../oci/registry-host.js'

/** The login a request was sent with, as messages may name it. */
export interface LoginUsed {
  username: string
  /** "dproxy keychain", "docker credsStore secretservice", "podman auth.json"; absent when a caller passed it in. */
  source?: string
}

export interface RefusalContext {
  registry: string
  /** What was asked for: "private/secret:latest", "blob sha256:... of private/secret". */
  subject: string
  status: number
  login: LoginUsed | undefined
  /** Why no login was found, when a source of them failed (a helper that hangs). */
  problem?: string
}

function whose(login: LoginUsed): string {
  return login.source ? `${login.username} (${login.source})` : login.username
}

/** The command that replaces the login that was refused. */
function relogin(registry: string, login: LoginUsed): string {
  const own = `\`dproxy login ${registry}\``
  const source = login.source ?? ''
  if (source.startsWith('docker ')) return `log in again with \`docker login ${registry}\`, or with ${own} (dproxy asks its own logins first)`
  if (source.startsWith('podman ')) return `log in again with \`podman login ${registry}\`, or with ${own} (dproxy asks its own logins first)`
  return `log in again with ${own}`
}

/** The message for a 401 or 403 from the registry API. */
export function refusedMessage(c: RefusalContext): string {
  const head = `${c.registry} refused ${c.subject} (${c.status})`
  if (c.login) {
    const why = c.status === 403 ? 'this account may not pull it' : 'it does not exist, this account may not pull it, or the login expired'
    return `${head} to ${whose(c.login)}: ${why}; ${relogin(c.registry, c.login)}`
  }
  const what =
    c.registry === DOCKER_HUB
      ? 'it is private or does not exist (Docker Hub answers both the same way)'
      : 'it needs a login, or does not exist'
  const none = c.problem ? ` (no login was found: ${c.problem})` : ''
  return `${head}: ${what}; log in with \`dproxy login ${c.registry}\`${none}`
}

/** The message for a 401 or 403 from the token service: the login itself was refused. */
export function loginRefusedMessage(registry: string, repository: string | undefined, status: number, login: LoginUsed): string {
  const what = repository ? ` for ${repository}` : ''
  return `${registry} refused the login ${whose(login)}${what} (token service answered ${status}): the password or token was not accepted (mistyped, revoked or expired); ${relogin(registry, login)}`
}

/** The message for a 404: the registry answered, and has no such thing. */
export function missingMessage(registry: string, subject: string, upstreamCode: string | undefined): string {
  return `${registry} has no ${subject} (404${upstreamCode ? ` ${upstreamCode.toLowerCase().replace(/_/g, ' ')}` : ''})`
}
