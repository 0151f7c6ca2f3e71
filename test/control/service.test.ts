// Service definitions for both platforms from one pure function, and writing
// and removing them in a test directory (never the real user's).

import fs from 'node:fs'
import path from 'node:path'
import t from 'tap'
import {
  installService,
  serviceDefinition,
  systemdQuote,
  systemdUserDir,
  uninstallService,
  type ServiceInput,
} from '../../src/control/service.js'

const base: ServiceInput = {
  platform: 'linux',
  nodePath: '/opt/node 20/bin/node',
  binPath: '/usr/lib/node_modules/dproxy/bin/dproxy.js',
  env: { DPROXY_CONFIG_DIR: '/home/ann/.dproxy 100%', DPROXY_UPSTREAMS: 'docker.io=http://mirror', HOME: '/home/ann' },
  home: '/home/ann',
  logFile: '/home/ann/.local/state/dproxy/dproxy.log',
  uid: 1000,
}

t.test('systemd user unit: absolute ExecStart, restart on failure, the DPROXY_*_DIR environment', async (t) => {
  const def = serviceDefinition(base)
  t.equal(def.kind, 'systemd')
  t.equal(def.path, '/home/ann/.config/systemd/user/dproxy.service')
  const lines = def.content.split('\n')
  t.ok(lines.includes('ExecStart="/opt/node 20/bin/node" "/usr/lib/node_modules/dproxy/bin/dproxy.js" "serve"'))
  t.ok(lines.includes('Environment="DPROXY_CONFIG_DIR=/home/ann/.dproxy 100%%"'), '% is escaped as a specifier')
  t.notOk(def.content.includes('DPROXY_UPSTREAMS'), 'settings other than directories belong in the config file')
  t.notOk(def.content.includes('HOME'), 'nothing else from the environment')
  for (const line of ['[Unit]', '[Service]', 'Restart=on-failure', '[Install]', 'WantedBy=default.target']) t.ok(lines.includes(line), line)
  t.same(def.enable, ['systemctl --user daemon-reload', 'systemctl --user enable --now dproxy'])
  t.same(def.links, ['/home/ann/.config/systemd/user/default.target.wants/dproxy.service'])

  t.equal(serviceDefinition({ ...base, env: { XDG_CONFIG_HOME: '/xdg' } }).path, '/xdg/systemd/user/dproxy.service')
  t.equal(systemdUserDir({ XDG_CONFIG_HOME: 'relative' }, '/home/ann'), '/home/ann/.config/systemd/user', 'a relative XDG dir is ignored')
  t.notOk(serviceDefinition({ ...base, env: {} }).content.includes('Environment='))
})

t.test('systemdQuote: backslash, quote, % and $ cannot escape the word; line breaks are refused', async (t) => {
  t.equal(systemdQuote('a b'), '"a b"')
  t.equal(systemdQuote('C:\\x "y" 50% $HOME'), '"C:\\\\x \\"y\\" 50%% $$HOME"')
  t.throws(() => systemdQuote('a\nExecStartPre=/bin/evil'), { code: 'USAGE' })
})

t.test('launchd agent: label, program arguments, environment, keep-alive on failure, log file', async (t) => {
  const def = serviceDefinition({ ...base, platform: 'darwin', home: '/Users/ann', nodePath: '/usr/local/bin/node', env: { DPROXY_CACHE_DIR: '/Volumes/big & fast/<cache>' } })
  t.equal(def.kind, 'launchd')
  t.equal(def.path, '/Users/ann/Library/LaunchAgents/dev.dproxy.plist')
  t.match(def.content, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<!DOCTYPE plist/)
  t.match(def.content, '<key>Label</key><string>dev.dproxy</string>')
  t.match(
    def.content,
    /<key>ProgramArguments<\/key>\s*<array>\s*<string>\/usr\/local\/bin\/node<\/string>\s*<string>\/usr\/lib\/node_modules\/dproxy\/bin\/dproxy.js<\/string>\s*<string>serve<\/string>\s*<\/array>/,
  )
  t.match(def.content, '<key>DPROXY_CACHE_DIR</key><string>/Volumes/big &amp; fast/&lt;cache&gt;</string>')
  t.match(def.content, /<key>KeepAlive<\/key>\s*<dict><key>SuccessfulExit<\/key><false\/><\/dict>/)
  t.match(def.content, '<key>StandardErrorPath</key><string>/home/ann/.local/state/dproxy/dproxy.log</string>')
  // Well-formed enough: every opened dict/array/plist is closed.
  for (const tag of ['dict', 'array', 'plist']) {
    t.equal((def.content.match(new RegExp(`<${tag}[ >]`, 'g')) ?? []).length, (def.content.match(new RegExp(`</${tag}>`, 'g')) ?? []).length, tag)
  }
  t.same(def.enable, ['launchctl bootstrap gui/1000 /Users/ann/Library/LaunchAgents/dev.dproxy.plist'])
  t.same(def.disable, ['launchctl bootout gui/1000/dev.dproxy'])
})

t.test('other platforms are refused; relative paths are a bug', async (t) => {
  t.throws(() => serviceDefinition({ ...base, platform: 'win32' }), { code: 'UNSUPPORTED', message: /dproxy start/ })
  t.throws(() => serviceDefinition({ ...base, platform: 'freebsd' }), { code: 'UNSUPPORTED' })
  t.throws(() => serviceDefinition({ ...base, binPath: 'bin/dproxy.js' }), { code: 'INTERNAL' })
})

t.test('install writes (created, unchanged, updated); uninstall removes the file and the enable link', async (t) => {
  const home = t.testdir()
  const def = serviceDefinition({ ...base, home, env: {} })
  t.same(await installService(def), { path: def.path, action: 'created' })
  t.equal(fs.readFileSync(def.path, 'utf8'), def.content)
  t.equal(fs.statSync(def.path).mode & 0o777, 0o644)
  t.same(await installService(def), { path: def.path, action: 'unchanged' })
  const newer = serviceDefinition({ ...base, home, env: { DPROXY_STATE_DIR: '/s' } })
  t.same(await installService(newer), { path: def.path, action: 'updated' })
  t.same(fs.readdirSync(path.dirname(def.path)), ['dproxy.service'], 'no temp file left')

  // What `systemctl --user enable` would have made.
  fs.mkdirSync(path.dirname(def.links[0]!), { recursive: true })
  fs.symlinkSync(def.path, def.links[0]!)
  t.same(await uninstallService(def), [def.links[0], def.path])
  t.notOk(fs.existsSync(def.path))
  t.notOk(fs.existsSync(def.links[0]!))
  t.same(await uninstallService(def), [], 'nothing left to remove')
})
