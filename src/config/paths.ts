// Where dproxy keeps its files on each platform. Every function takes the
// environment and platform explicitly (defaulting to the process's own) so that
// tests can compute a Windows or macOS layout on Linux and never look at the real
// user's home.
//
//   config  settings file and, without a keychain, credentials.json
//   cache   blobs and manifests (large; may be moved with cacheDir)
//   state   the daemon's pid, port and log files, admin-token, the client
//           tokens: tokens.json (0600; hashes only, credentials/tokens.ts),
//           tokens-used.json (their last use), tokens.lock (held while one
//           changes), and tls/ (the CA and server certificate of `serve --tls
//           auto`, keys 0600; daemon/tls.ts describes the files)
//
// DPROXY_CONFIG_DIR, DPROXY_CACHE_DIR and DPROXY_STATE_DIR override each one.
// The XDG variables are honoured on Linux and other Unixes but not on macOS or
// Windows (as env-paths does), and, per the XDG spec, only when absolute.

import os from 'node:os'
import path from 'node:path'

type Env = NodeJS.ProcessEnv

const appName = 'dproxy'

function pathFor(platform: NodeJS.Platform): path.PlatformPath {
  return platform === 'win32' ? path.win32 : path.posix
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}

/** The user's home directory: HOME (USERPROFILE on Windows), else the OS's answer. */
export function homeDir(env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  const fromEnv = platform === 'win32' ? nonEmpty(env.USERPROFILE) ?? nonEmpty(env.HOME) : nonEmpty(env.HOME)
  return fromEnv ?? os.homedir()
}

/** Replaces a leading '~' or '~/' with the home directory; other paths are returned unchanged. */
export function expandHome(p: string, env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  if (p === '~') return homeDir(env, platform)
  if (p.startsWith('~/') || (platform === 'win32' && p.startsWith('~\\'))) {
    return pathFor(platform).join(homeDir(env, platform), p.slice(2))
  }
  return p
}

function override(name: string, env: Env, platform: NodeJS.Platform): string | undefined {
  const value = nonEmpty(env[name])
  return value === undefined ? undefined : pathFor(platform).resolve(expandHome(value, env, platform))
}

function xdg(name: string, env: Env, platform: NodeJS.Platform): string | undefined {
  if (platform === 'darwin' || platform === 'win32') return undefined
  const value = nonEmpty(env[name])
  return value !== undefined && path.posix.isAbsolute(value) ? path.posix.join(value, appName) : undefined
}

function windowsBase(name: 'APPDATA' | 'LOCALAPPDATA', env: Env): string {
  const fallback = name === 'APPDATA' ? ['AppData', 'Roaming'] : ['AppData', 'Local']
  return nonEmpty(env[name]) ?? path.win32.join(homeDir(env, 'win32'), ...fallback)
}

/** The directory holding config.json (and credentials.json when there is no keychain). */
export function configDir(env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  const explicit = override('DPROXY_CONFIG_DIR', env, platform) ?? xdg('XDG_CONFIG_HOME', env, platform)
  if (explicit !== undefined) return explicit
  const p = pathFor(platform)
  switch (platform) {
    case 'darwin':
      return p.join(homeDir(env, platform), 'Library', 'Preferences', appName)
    case 'win32':
      return p.join(windowsBase('APPDATA', env), appName, 'Config')
    default:
      return p.join(homeDir(env, platform), '.config', appName)
  }
}

/** The cache directory used when no cacheDir is configured. */
export function defaultCacheDir(env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  const explicit = override('DPROXY_CACHE_DIR', env, platform) ?? xdg('XDG_DATA_HOME', env, platform)
  if (explicit !== undefined) return explicit
  const p = pathFor(platform)
  switch (platform) {
    case 'darwin':
      return p.join(homeDir(env, platform), 'Library', 'Application Support', appName)
    case 'win32':
      return p.join(windowsBase('LOCALAPPDATA', env), appName, 'Data')
    default:
      return p.join(homeDir(env, platform), '.local', 'share', appName)
  }
}

/** The directory for the daemon's pid, port and log files. */
export function stateDir(env: Env = process.env, platform: NodeJS.Platform = process.platform): string {
  const explicit = override('DPROXY_STATE_DIR', env, platform) ?? xdg('XDG_STATE_HOME', env, platform)
  if (explicit !== undefined) return explicit
  const p = pathFor(platform)
  switch (platform) {
    case 'darwin':
      return p.join(homeDir(env, platform), 'Library', 'Application Support', appName, 'state')
    case 'win32':
      return p.join(windowsBase('LOCALAPPDATA', env), appName, 'State')
    default:
      return p.join(homeDir(env, platform), '.local', 'state', appName)
  }
}
