// The world of the client end-to-end tests: the upstream fixture (docker.io is
// the hub shim, ghcr.io the plain registry), a dproxy daemon, and
// `dproxy setup --root <tmp>` for docker and containerd plus the `--user`
// podman drop-in (HOME in the test dir), as a user would run them. The origin
// is unreachable for clients that honour a proxy (`noOrigin`), so a pull that
// works went through dproxy.

import { promises as fs } from 'node:fs'
import { join } from 'node:path'
import type { Test } from 'tap'
import type { Daemon } from '../../src/daemon/daemon.js'
import { freePort } from '../fixtures/clients.js'
import { startUpstream, type Upstream } from '../fixtures/upstream.js'
import { runInProcess, type Ran } from './cli.js'
import { startDaemon } from './daemon.js'

export interface SetupWorld {
  up: Upstream
  d: Daemon
  dir: string
  root: string
  /** <root>/etc/docker/daemon.json, which setup merged into. */
  daemonJson: string
  /** Its text before setup. */
  userDaemonJson: string
  /** The CLI's environment (HOME, config, cache and state dirs in the test dir). */
  env: Record<string, string>
  registries: string[]
  /** Proxy variables pointing at a closed port, loopback excepted. */
  noOrigin: Record<string, string>
  system: Ran
  user: Ran
}

export async function setUpClients(t: Test): Promise<SetupWorld> {
  const up = await startUpstream()
  t.teardown(() => up.stop())
  const dir = t.testdir({ root: { etc: { docker: {} } }, home: {}, config: {}, state: {}, cache: {} })
  const root = join(dir, 'root')
  const daemonJson = join(root, 'etc', 'docker', 'daemon.json')
  const userDaemonJson = `{\n  "deprecated-key-path": ${JSON.stringify(join(dir, 'key.json'))}\n}\n`
  await fs.writeFile(daemonJson, userDaemonJson)
  // ghcr.io is mapped to the plain fixture registry: the second registry, reached with ?ns= or a path.
  const upstreams = { 'docker.io': up.hubUrl, 'ghcr.io': up.registryUrl }
  const d = await startDaemon(t, undefined, { cacheDir: join(dir, 'cache'), upstreams })
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: join(dir, 'home'),
    DPROXY_CONFIG_DIR: join(dir, 'config'),
    DPROXY_CACHE_DIR: join(dir, 'cache'),
    DPROXY_STATE_DIR: join(dir, 'state'),
    DPROXY_UPSTREAMS: Object.entries(upstreams).map(([k, v]) => `${k}=${v}`).join(','),
  }
  const registries = ['--registries', 'docker.io,ghcr.io']
  const system = await runInProcess(['setup', 'docker', 'containerd', '--root', root, ...registries, '--yes'], env)
  const user = await runInProcess(['setup', 'podman', '--user', ...registries, '--yes'], env)
  const closedProxy = `http://127.0.0.1:${await freePort()}`
  const noOrigin = { HTTPS_PROXY: closedProxy, HTTP_PROXY: closedProxy, NO_PROXY: '127.0.0.1,localhost' }
  return { up, d, dir, root, daemonJson, userDaemonJson, env, registries, noOrigin, system, user }
}
