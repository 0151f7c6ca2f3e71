// podman, and everything built on containers/image (CRI-O, buildah, skopeo):
// a drop-in registries.conf.d/50-dproxy.conf, dproxy's own file, read after
// registries.conf, with one [[registry]] per registry and dproxy as its first
// [[registry.mirror]]. The origin stays the fallback. For docker.io the mirror
// is dproxy's root (containers/image sends `library/alpine`); for any other
// registry the mirror location carries the registry as a path, which dproxy
// reads as "this registry" (`127.0.0.1:5000/ghcr.io/owner/img`). The local
// dproxy speaks plain HTTP, hence `insecure`; a team server (--server) speaks
// TLS, and its CA goes to certs.d/<HOST:PORT>/ca.crt, where containers/image
// looks for a registry's CA (~/.config/containers/certs.d first, then
// /etc/containers/certs.d).

import { join } from 'node:path'
import { fenced, findFence, readText, underRoot } from './files.js'
import { checkToml } from './hosts-toml.js'
import { caEdit, type SetupOptions, type TargetPlan } from './targets.js'
import { DOCKER_HUB } from '../oci/registry-host.js'

export const DROP_IN = '50-dproxy.conf'

export function podmanPaths(o: Pick<SetupOptions, 'user' | 'home'>): { dropIn: string; certsDir: string; underRoot: boolean } {
  if (o.user) {
    const dir = join(o.home, '.config', 'containers')
    return { dropIn: join(dir, 'registries.conf.d', DROP_IN), certsDir: join(dir, 'certs.d'), underRoot: false }
  }
  return { dropIn: join('/etc/containers/registries.conf.d', DROP_IN), certsDir: '/etc/containers/certs.d', underRoot: true }
}

/** The drop-in's text for these registries; `tls`: dproxy is a team server with a CA clients trust. */
export function registriesConf(registries: string[], address: string, tls = false): string {
  const tables = registries.map((registry) => {
    const mirror = registry === DOCKER_HUB ? address : `${address}/${registry}`
    return `[[registry]]\nprefix = "${registry}"\nlocation = "${registry}"\n\n[[registry.mirror]]\nlocation = "${mirror}"\n${tls ? '' : 'insecure = true\n'}`
  })
  return fenced(tables.join('\n'))
}

export async function planPodman(o: SetupOptions): Promise<TargetPlan> {
  const paths = podmanPaths(o)
  const path = paths.underRoot ? underRoot(o.root, paths.dropIn) : paths.dropIn
  const before = await readText(path)
  const block = registriesConf(o.registries, o.address, o.tls !== undefined)
  let after = block
  if (before !== undefined) {
    checkToml(before, paths.dropIn)
    const at = findFence(before)
    after = at ? before.slice(0, at[0]) + block + before.slice(at[1]) : `${before}${before.endsWith('\n') || before === '' ? '' : '\n'}\n${block}`
  }
  checkToml(after, paths.dropIn)
  return {
    target: 'podman',
    edits: [...(await caEdit('podman', paths.certsDir, o, paths.underRoot)), { target: 'podman', path, shown: paths.dropIn, before, after, kind: 'fenced' }],
    notes: ['podman, buildah, skopeo and CRI-O read registries.conf.d on every run (CRI-O: sudo systemctl reload crio)'],
  }
}
