// `dproxy service install|uninstall` through the built binary, with HOME and
// XDG_CONFIG_HOME in a test directory. It must never run systemctl: PATH
// holds a `systemctl` that records being called, and the test checks it was not.

import { spawn } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'

const bin = fileURLToPath(new URL('../../bin/dproxy.js', import.meta.url))

async function run(env: Record<string, string>, args: string[]) {
  const child = spawn(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr.on('data', (c: Buffer) => (err += c.toString()))
  const [code] = (await once(child, 'exit')) as [number | null]
  return { code, out, err }
}

t.test('service install/uninstall on Linux: writes the unit under XDG_CONFIG_HOME, prints the commands, runs none', { skip: process.platform !== 'linux' && 'systemd layout' }, async (t) => {
  const root = t.testdir({
    home: {},
    xdg: {},
    fakebin: { systemctl: '#!/bin/sh\necho "$@" >> "$(dirname "$0")/called"\n', launchctl: '#!/bin/sh\necho "$@" >> "$(dirname "$0")/called"\n' },
  })
  for (const tool of ['systemctl', 'launchctl']) fs.chmodSync(path.join(root, 'fakebin', tool), 0o755)
  const env = {
    PATH: `${path.join(root, 'fakebin')}:${process.env.PATH ?? ''}`,
    HOME: path.join(root, 'home'),
    XDG_CONFIG_HOME: path.join(root, 'xdg'),
    DPROXY_CONFIG_DIR: path.join(root, 'home', 'dproxy-config'),
  }
  const unit = path.join(root, 'xdg', 'systemd', 'user', 'dproxy.service')

  const dry = await run(env, ['service', 'install', '--dry-run'])
  t.equal(dry.code, 0, dry.err)
  t.match(dry.out, `would write ${unit}:`)
  t.match(dry.out, `ExecStart="${process.execPath}" "${bin}" "serve"`)
  t.match(dry.out, `Environment="DPROXY_CONFIG_DIR=${env.DPROXY_CONFIG_DIR}"`)
  t.notOk(fs.existsSync(unit), '--dry-run writes nothing')

  const installed = await run(env, ['service', 'install'])
  t.equal(installed.code, 0, installed.err)
  t.match(installed.out, `created: ${unit}`)
  t.match(installed.out, 'systemctl --user daemon-reload && systemctl --user enable --now dproxy')
  t.match(fs.readFileSync(unit, 'utf8'), 'Restart=on-failure')

  const json = await run(env, ['service', 'install', '--json'])
  t.match(JSON.parse(json.out), { kind: 'systemd', path: unit, action: 'unchanged', enable: Array })

  const removed = await run(env, ['service', 'uninstall'])
  t.equal(removed.code, 0, removed.err)
  t.match(removed.out, `removed ${unit}`)
  t.match(removed.out, 'systemctl --user stop dproxy')
  t.notOk(fs.existsSync(unit))
  const again = await run(env, ['service', 'uninstall', '--json'])
  t.match(JSON.parse(again.out), { removed: [], path: unit })

  t.notOk(fs.existsSync(path.join(root, 'fakebin', 'called')), 'neither systemctl nor launchctl was run')
  t.notOk(fs.existsSync(path.join(root, 'home', '.config')), 'nothing written outside XDG_CONFIG_HOME')

  const help = await run(env, ['service', 'install', '--help'])
  t.match(help.out, '--dry-run')
})
