// Running `dproxy serve` under the user's service manager, so the cache is up
// after login without a terminal: a systemd user unit on Linux, a launchd
// agent on macOS. serviceDefinition() is a pure function of the platform,
// paths and environment, so both platforms are tested anywhere; the file is
// written by installService(). Nothing here runs systemctl or launchctl: the
// caller prints the commands that enable (or undo) the service.
//
// The unit runs the absolute node binary on the absolute bin/dproxy.js, so it
// keeps working whatever PATH the service manager has. The DPROXY_*_DIR
// variables in effect at install time are written into the unit, because a
// service manager does not see the shell's environment; every other setting
// belongs in the config file, which the service reads like any other run.

import { promises as fs } from 'node:fs'
import path from 'node:path'
import { DproxyError } from '../errors.js'
import { removeFile } from '../fs.js'

export const SYSTEMD_UNIT = 'dproxy.service'
export const LAUNCHD_LABEL = 'dev.dproxy'

/** Environment variables carried into the service definition when set. */
export const SERVICE_ENV_VARS = ['DPROXY_CONFIG_DIR', 'DPROXY_CACHE_DIR', 'DPROXY_STATE_DIR'] as const

export interface ServiceInput {
  platform: NodeJS.Platform
  /** Absolute path of the node binary (process.execPath). */
  nodePath: string
  /** Absolute path of bin/dproxy.js. */
  binPath: string
  env: NodeJS.ProcessEnv
  /** The user's home directory. */
  home: string
  /** Where launchd writes the daemon's output (macOS; systemd uses the journal). */
  logFile: string
  /** The numeric user id, for launchctl's gui/<uid> domain (macOS). */
  uid?: number
}

export interface ServiceDefinition {
  kind: 'systemd' | 'launchd'
  /** Where the definition goes. */
  path: string
  content: string
  /** Commands that load and start it, to run after writing the file. */
  enable: string[]
  /** Commands that stop it, to run after uninstalling. */
  disable: string[]
  /** Links that enabling created (systemd's default.target.wants entry); uninstall removes them too. */
  links: string[]
}

function carriedEnv(env: NodeJS.ProcessEnv): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const name of SERVICE_ENV_VARS) {
    const value = env[name]
    if (value !== undefined && value !== '') out.push([name, value])
  }
  return out
}

/**
 * One word for a systemd command line or Environment= line: double-quoted,
 * with backslash and quote escaped, `%` doubled (specifiers) and `$` doubled
 * (variable expansion in ExecStart).
 */
export function systemdQuote(word: string): string {
  if (/[\0\n\r]/.test(word)) throw new DproxyError('USAGE', `cannot put a value with a line break or NUL into a systemd unit: ${JSON.stringify(word)}`)
  return `"${word.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/%/g, '%%').replace(/\$/g, '$$$$')}"`
}

function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** `$XDG_CONFIG_HOME/systemd/user` (when set and absolute), else `~/.config/systemd/user`. */
export function systemdUserDir(env: NodeJS.ProcessEnv, home: string): string {
  const xdg = env.XDG_CONFIG_HOME
  const base = xdg !== undefined && path.posix.isAbsolute(xdg) ? xdg : path.posix.join(home, '.config')
  return path.posix.join(base, 'systemd', 'user')
}

function systemdUnit(i: ServiceInput): ServiceDefinition {
  const env = carriedEnv(i.env)
  const content = [
    '# Written by `dproxy service install`; remove with `dproxy service uninstall`.',
    '[Unit]',
    'Description=dproxy pull-through cache for container registries',
    'Documentation=man:dproxy(1) man:dproxy-service(1)',
    'After=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `ExecStart=${[i.nodePath, i.binPath, 'serve'].map(systemdQuote).join(' ')}`,
    ...env.map(([k, v]) => `Environment=${systemdQuote(`${k}=${v}`)}`),
    'Restart=on-failure',
    'RestartSec=5',
    // serve exits 0 on SIGTERM after finishing responses in flight (at most 10 s).
    'TimeoutStopSec=20',
    '',
    '[Install]',
    'WantedBy=default.target',
    '',
  ].join('\n')
  const dir = systemdUserDir(i.env, i.home)
  return {
    kind: 'systemd',
    path: path.posix.join(dir, SYSTEMD_UNIT),
    content,
    enable: ['systemctl --user daemon-reload', 'systemctl --user enable --now dproxy'],
    // The unit file is gone by then; a loaded unit can still be stopped, and the reload forgets it.
    disable: ['systemctl --user stop dproxy', 'systemctl --user daemon-reload'],
    links: [path.posix.join(dir, 'default.target.wants', SYSTEMD_UNIT)],
  }
}

function launchdPlist(i: ServiceInput): ServiceDefinition {
  const env = carriedEnv(i.env)
  const str = (s: string) => `<string>${xmlEscape(s)}</string>`
  const plistPath = path.posix.join(i.home, 'Library', 'LaunchAgents', `${LAUNCHD_LABEL}.plist`)
  const domain = `gui/${i.uid ?? '$(id -u)'}`
  const content = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<!-- Written by `dproxy service install`; remove with `dproxy service uninstall`. -->',
    '<plist version="1.0">',
    '<dict>',
    `  <key>Label</key>${str(LAUNCHD_LABEL)}`,
    '  <key>ProgramArguments</key>',
    '  <array>',
    ...[i.nodePath, i.binPath, 'serve'].map((a) => `    ${str(a)}`),
    '  </array>',
    ...(env.length > 0
      ? ['  <key>EnvironmentVariables</key>', '  <dict>', ...env.map(([k, v]) => `    <key>${xmlEscape(k)}</key>${str(v)}`), '  </dict>']
      : []),
    '  <key>RunAtLoad</key><true/>',
    // Restart when it fails, not after a clean stop.
    '  <key>KeepAlive</key>',
    '  <dict><key>SuccessfulExit</key><false/></dict>',
    `  <key>StandardOutPath</key>${str(i.logFile)}`,
    `  <key>StandardErrorPath</key>${str(i.logFile)}`,
    '</dict>',
    '</plist>',
    '',
  ].join('\n')
  return {
    kind: 'launchd',
    path: plistPath,
    content,
    enable: [`launchctl bootstrap ${domain} ${plistPath}`],
    disable: [`launchctl bootout ${domain}/${LAUNCHD_LABEL}`],
    links: [],
  }
}

/** The service definition for `platform`; UNSUPPORTED on platforms other than Linux and macOS. */
export function serviceDefinition(i: ServiceInput): ServiceDefinition {
  if (!path.isAbsolute(i.nodePath) || !path.isAbsolute(i.binPath)) {
    throw new DproxyError('INTERNAL', `expected absolute paths for node and dproxy, got ${i.nodePath} and ${i.binPath}`)
  }
  if (i.platform === 'linux') return systemdUnit(i)
  if (i.platform === 'darwin') return launchdPlist(i)
  throw new DproxyError(
    'UNSUPPORTED',
    `dproxy service knows systemd (Linux) and launchd (macOS), not ${i.platform}; use dproxy start instead`,
  )
}

export interface InstallResult {
  path: string
  /** 'created', 'updated', or 'unchanged' (the file already had this content). */
  action: 'created' | 'updated' | 'unchanged'
}

/** Writes the definition (creating its directory), replacing an older one. */
export async function installService(def: ServiceDefinition): Promise<InstallResult> {
  const existing = await fs.readFile(def.path, 'utf8').catch(() => undefined)
  if (existing === def.content) return { path: def.path, action: 'unchanged' }
  await fs.mkdir(path.dirname(def.path), { recursive: true })
  const tmp = `${def.path}.${process.pid}.tmp`
  await fs.writeFile(tmp, def.content, { mode: 0o644 })
  await fs.rename(tmp, def.path)
  return { path: def.path, action: existing === undefined ? 'created' : 'updated' }
}

/** Removes the definition and its enable links; returns what was removed (empty when nothing was installed). */
export async function uninstallService(def: Pick<ServiceDefinition, 'path' | 'links'>): Promise<string[]> {
  const removed: string[] = []
  for (const file of [...def.links, def.path]) if (await removeFile(file)) removed.push(file)
  return removed
}
