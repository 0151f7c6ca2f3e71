// What `dproxy env` prints: the client credentials and image prefix under the
// names GitLab CI predefines for its Dependency Proxy, so that scripts written
// for GitLab work against dproxy verbatim:
//
//   eval "$(dproxy env)"
//   printf %s "$CI_DEPENDENCY_PROXY_PASSWORD" |
//     docker login -u "$CI_DEPENDENCY_PROXY_USER" --password-stdin "$CI_DEPENDENCY_PROXY_SERVER"
//   docker pull "$CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX/alpine:latest"
//
// The prefix has GitLab's `<group>/dependency_proxy/containers` shape, which
// oci/reference.ts maps to Docker Hub. Each output format quotes values for
// its own parser, and a value that no quoting could carry (a line break, NUL)
// is refused rather than printed so that it breaks the reader. Error messages
// name the variable, never its value: the password is one of them.

import { DproxyError } from '../errors.js'
import { isLoopbackHost } from '../net.js'
import { isValidRegistryHost } from '../oci/registry-host.js'

export const ENV_FORMATS = ['shell', 'dotenv', 'json', 'docker-auth-config', 'gitlab-ci'] as const
export type EnvFormat = (typeof ENV_FORMATS)[number]

/** GitLab's group-level path to the Dependency Proxy; `dproxy` plays the group. */
export const GROUP_IMAGE_PATH = 'dproxy/dependency_proxy/containers'

export interface ClientEnv {
  CI_DEPENDENCY_PROXY_USER: string
  CI_DEPENDENCY_PROXY_PASSWORD: string
  CI_DEPENDENCY_PROXY_SERVER: string
  CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX: string
  CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX: string
}

/**
 * `host:port` clients use to reach the daemon: `--host` as given (its port, or
 * `port` when it has none), else localhost:<port>.
 */
export function serverAddress(host: string | undefined, port: number): string {
  let server: string
  if (host === undefined || host.trim() === '') {
    server = `localhost:${port}`
  } else {
    const h = host.trim()
    const hasPort = /^\[[^\]]*\]:\d+$/.test(h) || (!h.startsWith('[') && /^[^:]*:\d+$/.test(h))
    const bare = net6(h) ? `[${h}]` : h
    server = hasPort ? h : `${bare}:${port}`
  }
  if (/:0$/.test(server)) {
    throw new DproxyError('USAGE', 'the daemon port is 0 (chosen at start); pass --host HOST:PORT with the port it listens on')
  }
  if (!isValidRegistryHost(server)) {
    throw new DproxyError('USAGE', `expected --host like 'ci-cache.example:5000' or '10.0.0.5', got '${host ?? ''}'`)
  }
  return server
}

/**
 * The `host:port` a running daemon is reached at, from the `listen` list of
 * its lock file (lifecycle.ts): `localhost:<port>` when it listens on
 * loopback or a wildcard address (what local clients type), else its first
 * address. Undefined when it does not listen yet.
 */
export function serverFromListen(listen: readonly string[]): string | undefined {
  const parsed = listen.map((a) => /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(a)).filter((m) => m !== null)
  const local = parsed.find((m) => isLoopbackHost(m[1]!) || ['0.0.0.0', '[::]'].includes(m[1]!))
  if (local) return `localhost:${local[2]}`
  const first = parsed[0]
  return first ? `${first[1]}:${first[2]}` : undefined
}

/** A bare IPv6 address (more than one colon, no brackets) as someone might type it. */
function net6(host: string): boolean {
  return !host.startsWith('[') && (host.match(/:/g)?.length ?? 0) > 1
}

export function clientEnv(opts: { username: string; password: string; server: string }): ClientEnv {
  const prefix = `${opts.server}/${GROUP_IMAGE_PATH}`
  return {
    CI_DEPENDENCY_PROXY_USER: opts.username,
    CI_DEPENDENCY_PROXY_PASSWORD: opts.password,
    CI_DEPENDENCY_PROXY_SERVER: opts.server,
    CI_DEPENDENCY_PROXY_GROUP_IMAGE_PREFIX: prefix,
    CI_DEPENDENCY_PROXY_DIRECT_GROUP_IMAGE_PREFIX: prefix,
  }
}

function refuseLineBreaks(name: string, value: string): void {
  if (/[\r\n\0]/.test(value)) {
    throw new DproxyError('USAGE', `${name} cannot be printed: its value contains a line break or NUL`)
  }
}

/** POSIX shell single quotes; a `'` inside becomes `'\''`. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`
}

/**
 * A value as the dotenv family (dotenv, docker compose) reads it: bare when it
 * has nothing special, else single quotes (taken literally), else double
 * quotes (only when nothing inside could be read as an escape or variable),
 * else backquotes.
 */
export function dotenvQuote(name: string, value: string): string {
  refuseLineBreaks(name, value)
  if (/^[A-Za-z0-9_./:@%+,=-]*$/.test(value)) return value
  if (!value.includes("'")) return `'${value}'`
  if (!/["\\$`]/.test(value)) return `"${value}"`
  if (!value.includes('`')) return `\`${value}\``
  throw new DproxyError('USAGE', `${name} cannot be written as dotenv: its value holds all three kinds of quotes`)
}

export function formatEnv(env: ClientEnv, format: EnvFormat): string {
  const entries = Object.entries(env) as Array<[keyof ClientEnv, string]>
  for (const [name, value] of entries) refuseLineBreaks(name, value)
  switch (format) {
    case 'shell':
      return entries.map(([name, value]) => `export ${name}=${shellQuote(value)}\n`).join('')
    case 'dotenv':
      return entries.map(([name, value]) => `${name}=${dotenvQuote(name, value)}\n`).join('')
    case 'json':
      return `${JSON.stringify(env, null, 2)}\n`
    case 'docker-auth-config': {
      const auth = Buffer.from(`${env.CI_DEPENDENCY_PROXY_USER}:${env.CI_DEPENDENCY_PROXY_PASSWORD}`, 'utf8').toString('base64')
      return `${JSON.stringify({ auths: { [env.CI_DEPENDENCY_PROXY_SERVER]: { auth } } })}\n`
    }
    case 'gitlab-ci':
      // JSON strings are valid YAML double-quoted scalars.
      return `variables:\n${entries.map(([name, value]) => `  ${name}: ${JSON.stringify(value)}\n`).join('')}`
  }
}

export function parseEnvFormat(value: string): EnvFormat {
  if ((ENV_FORMATS as readonly string[]).includes(value)) return value as EnvFormat
  throw new DproxyError('USAGE', `expected --format to be one of ${ENV_FORMATS.join(', ')}, got '${value}'`)
}
