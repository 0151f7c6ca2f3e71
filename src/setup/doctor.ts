// `dproxy doctor` as plain functions: prove the route, client by client, and
// say what to fix. Configuration files only say what a client should do; the
// proof is a real pull by that client of the probe repository
// (`docker.io/dproxy-doctor/probe:<nonce>`, proxy/probe.ts), which the daemon
// answers itself and notes. The nonce arriving at dproxy means the route
// works; a client that bypasses dproxy asks the real registry, where that
// repository does not exist, so the check costs no Docker Hub pull either way.
//
// Clients are reached the way the user's shell reaches them: the same
// environment (DOCKER_HOST, CONTAINER_HOST, CONTAINERD_ADDRESS, proxies) and
// their own config files, under --root as setup writes them. A client that is
// not installed or whose daemon does not answer is skipped with a note, not a
// failure. The daemon's own health comes first: running, listening where the
// clients were told, a writable cache with free space, upstreams reachable,
// clock skew against their Date header, rate-limit headroom. The upstreams
// checked are the ones the running daemon uses (it may have been started with
// --upstream), as its status reports them; the configured ones only when no
// daemon runs. A registry with a chain of endpoints (a team cache before the
// origin) has each endpoint checked on its own, in the order asked: reachable,
// its own login working, and what the daemon knows of it (down, served last).
//
// On a client that setup --server pointed at a team server, the route is
// that server's, not this machine's dproxy: doctor-tls.ts checks the server
// and the CA files installed for it instead of a local daemon, and a
// client's pull of the probe proves the route by succeeding (only dproxy
// has that repository), since the server's probe log is not this
// machine's to read.

import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { constants, promises as fs } from 'node:fs'
import { delimiter, join } from 'node:path'
import { parse as parseToml } from 'smol-toml'
import { parse as parseYaml } from 'yaml'
import { formatBytes } from '../config/units.js'
import type { ImageFailures } from '../daemon/failures.js'
import { diskSpace } from '../fs.js'
import { findDaemon, type AdminClient } from '../control/admin-client.js'
import { collectStatus, describeLimit, headroom, servedLast, type CollectStatusOptions, type StatusSnapshot } from '../control/status.js'
import { isDproxyError } from '../errors.js'
import { isLoopbackHost } from '../net.js'
import { PROBE_REPOSITORY } from '../proxy/probe.js'
import { ORIGIN_KEYWORD } from '../config/keys.js'
import { PROBE_TIMEOUT_MS, type EndpointClient, type EndpointStatus } from '../upstream/client.js'
import { RATE_LIMIT_PROBE } from '../upstream/ratelimit.js'
import type { EndpointKind, UpstreamMap } from '../upstream/registries.js'
import { clientAddress } from './address.js'
import { buildkitPaths } from './buildkit.js'
import { containerdPaths } from './containerd.js'
import { dockerPaths } from './docker.js'
import { readText, underRoot } from './files.js'
import { K3S_REGISTRIES } from './k3s.js'
import { podmanPaths } from './podman.js'
import { daemonTlsChecks, serverChecks } from './doctor-tls.js'
import { readRecord } from './record.js'
import { DOCKER_HUB } from '../oci/registry-host.js'

export const DOCTOR_CLIENTS = ['docker', 'ctr', 'podman', 'buildkit', 'k3s'] as const
export type DoctorClient = (typeof DOCTOR_CLIENTS)[number]

export interface Check {
  name: string
  level: 'ok' | 'warn' | 'fail'
  detail: string
  fix?: string
}

export interface ClientReport {
  client: DoctorClient
  /** ok: configured (and, for docker, ctr and podman, verified by a pull); skipped: not installed or not running. */
  state: 'ok' | 'broken' | 'skipped'
  configured: boolean
  verified: boolean
  reason: string
  fix?: string
}

export interface DoctorReport {
  ok: boolean
  /** Where the clients are told to reach dproxy. */
  address: string
  listen: string[]
  checks: Check[]
  clients: ClientReport[]
  /** Every upstream endpoint of every registry pulls go to, in the order asked. */
  endpoints?: EndpointReport[]
  recentFailures: ImageFailures[]
}

/** One upstream endpoint as the doctor found it. */
export interface EndpointReport {
  registry: string
  endpoint: string
  kind: EndpointKind
  position: number
  last: boolean
  reachable: boolean
  /** `answers (HTTP 401)`, or `is unreachable (why)`. */
  reach: string
  /** ok: its login or token dance let it answer for the probe manifest; refused: 401/403; unknown: not tried or another failure. */
  auth: 'ok' | 'refused' | 'unknown'
  authDetail: string
  /** The running daemon's breaker for it (absent when no daemon runs). */
  up?: boolean
  /** When it last answered one of the running daemon's requests. */
  lastServedAt?: string
  /** It answered the running daemon's latest upstream request for its registry. */
  servedLast: boolean
  /** This machine's clock minus its Date header, when it sent one. */
  skewSeconds?: number
  fix?: string
}

export interface RunResult {
  /** null when the command could not run or was killed. */
  code: number | null
  stdout: string
  stderr: string
}

export type Runner = (cmd: string, args: string[], o: { env: NodeJS.ProcessEnv; timeoutMs: number }) => Promise<RunResult>

/** Runs a client binary with the user's environment, bounded in time and output. */
export const runCommand: Runner = (cmd, args, o) =>
  new Promise((resolve) => {
    execFile(cmd, args, { env: o.env, timeout: o.timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (err?.message ?? '') })
    })
  })

export interface DoctorOptions extends Pick<CollectStatusOptions, 'credentials'> {
  settings: {
    cacheDir: string
    stateDir: string
    hosts: string[]
    port: number
    upstreams: UpstreamMap
    noOrigin?: boolean | readonly string[]
    chainConnectTimeoutMs?: number | undefined
    chainFirstByteTimeoutMs?: number | undefined
    dockerCredentials?: boolean
    tlsNames?: readonly string[]
  }
  /** Treated as `/` for system config files (`--root`, as setup has it). */
  root: string
  home: string
  env: NodeJS.ProcessEnv
  run?: Runner
  /** Bound on one client pull. Default 120 s. */
  pullTimeoutMs?: number
  now?: () => number
}

/** A `host:port`, URL, or `host:port/path` (registries.conf) names one of dproxy's listen addresses. */
export function pointsAt(value: string, listen: string[]): boolean {
  const hostPort = value.replace(/^[a-z]+:\/\//i, '').split('/')[0]!.toLowerCase()
  const split = (a: string) => {
    const at = a.lastIndexOf(':')
    return { host: a.slice(0, at).replace(/^\[|\]$/g, ''), port: a.slice(at + 1) }
  }
  const want = split(hostPort)
  const loopback = want.host === 'localhost' || isLoopbackHost(want.host)
  return listen.some((l) => {
    const have = split(l)
    if (have.port !== want.port) return false
    if (have.host === want.host) return true
    return loopback && (have.host === '0.0.0.0' || have.host === '::' || (want.host === 'localhost' && isLoopbackHost(have.host)))
  })
}

const lastLine = (s: string) =>
  s
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .pop() ?? ''

async function onPath(bin: string, env: NodeJS.ProcessEnv): Promise<boolean> {
  for (const dir of (env.PATH ?? '').split(delimiter).filter((d) => d !== '')) {
    if (await fs.access(join(dir, bin), constants.X_OK).then(() => true, () => false)) return true
  }
  return false
}

async function readToml(path: string): Promise<Record<string, unknown> | undefined> {
  const text = await readText(path).catch(() => undefined)
  if (text === undefined) return undefined
  try {
    return parseToml(text) as Record<string, unknown>
  } catch {
    return undefined
  }
}

const table = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [])

/** What one client's configuration says: the addresses it names for docker.io, and where. */
interface Found {
  /** `file: address` for every mirror of docker.io named, dproxy's or not. */
  named: Array<{ file: string; address: string }>
}

/** hosts.toml for docker.io in `dir`: the hosts it lists. */
async function hostsTomlMirrors(dir: string, shown: string): Promise<Found['named']> {
  const doc = await readToml(join(dir, DOCKER_HUB, 'hosts.toml'))
  return Object.keys(table(doc?.host) ?? {}).map((address) => ({ file: `${shown}/${DOCKER_HUB}/hosts.toml`, address }))
}

interface Context {
  o: DoctorOptions
  listen: string[]
  sys: (path: string) => string
  /** The team server's URL when setup --server configured this machine. */
  remote?: string
}

async function dockerConfig(c: Context, info: string): Promise<Found['named']> {
  const named: Found['named'] = []
  try {
    for (const m of strings(JSON.parse(info))) named.push({ file: 'dockerd (docker info: registry-mirrors)', address: m })
  } catch {
    // An older daemon printed no JSON: the files below still say what it was told.
  }
  for (const user of [false, true]) {
    const p = dockerPaths({ user, home: c.o.home })
    named.push(...(await hostsTomlMirrors(p.underRoot ? c.sys(p.certsDir) : p.certsDir, p.certsDir)))
  }
  return named
}

/** Where ctr finds hosts.toml files: containerd's config_path, else setup's default. */
async function containerdHostsDir(c: Context): Promise<{ dir: string; shown: string }> {
  for (const user of [false, true]) {
    const p = containerdPaths({ user, home: c.o.home })
    const doc = await readToml(p.underRoot ? c.sys(p.config) : p.config)
    const plugins = table(doc?.plugins)
    for (const plugin of ['io.containerd.cri.v1.images', 'io.containerd.grpc.v1.cri']) {
      const configPath = table(table(plugins?.[plugin])?.registry)?.config_path
      if (typeof configPath === 'string' && configPath !== '') {
        const shown = configPath.split(':')[0]!
        return { dir: p.underRoot ? c.sys(shown) : shown, shown }
      }
    }
  }
  const p = containerdPaths({ user: false, home: c.o.home })
  return { dir: c.sys(p.certsDir), shown: p.certsDir }
}

/** registries.conf and every drop-in podman reads: docker.io's mirrors. */
async function podmanConfig(c: Context): Promise<Found['named']> {
  const userDir = join(c.o.home, '.config', 'containers')
  const files = [c.o.env.CONTAINERS_REGISTRIES_CONF ?? join(userDir, 'registries.conf'), c.sys('/etc/containers/registries.conf')]
  for (const dir of [c.sys('/etc/containers/registries.conf.d'), join(userDir, 'registries.conf.d')]) {
    const names = await fs.readdir(dir).catch(() => [] as string[])
    files.push(...names.filter((n) => n.endsWith('.conf')).sort().map((n) => join(dir, n)))
  }
  const named: Found['named'] = []
  for (const file of files) {
    const doc = await readToml(file)
    for (const r of Array.isArray(doc?.registry) ? (doc.registry as unknown[]) : []) {
      const reg = table(r)
      if (reg?.prefix !== DOCKER_HUB && reg?.location !== DOCKER_HUB) continue
      for (const m of Array.isArray(reg.mirror) ? (reg.mirror as unknown[]) : []) {
        const location = table(m)?.location
        if (typeof location === 'string') named.push({ file, address: location })
      }
    }
  }
  return named
}

async function buildkitConfig(c: Context): Promise<Found['named']> {
  const named: Found['named'] = []
  for (const user of [false, true]) {
    const p = buildkitPaths({ user, home: c.o.home })
    const file = p.underRoot ? c.sys(p.config) : p.config
    const mirrors = table(table((await readToml(file))?.registry)?.[DOCKER_HUB])?.mirrors
    for (const address of strings(mirrors)) named.push({ file: p.config, address })
  }
  return named
}

async function k3sConfig(c: Context): Promise<Found['named']> {
  const text = await readText(c.sys(K3S_REGISTRIES)).catch(() => undefined)
  if (text === undefined) return []
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch {
    return []
  }
  const endpoint = table(table(table(doc)?.mirrors)?.[DOCKER_HUB])?.endpoint
  return strings(endpoint).map((address) => ({ file: K3S_REGISTRIES, address }))
}

/** configured, with the reason when not: nothing names dproxy, or only another address. */
function judgeConfig(client: DoctorClient, named: Found['named'], listen: string[]): { configured: boolean; reason: string } {
  const ours = named.find((n) => pointsAt(n.address, listen))
  if (ours) return { configured: true, reason: `${ours.file} names dproxy (${ours.address})` }
  const stale = named.find((n) => /^(https?:\/\/)?(127\.|\[::1\]|localhost)/.test(n.address))
  if (stale) return { configured: false, reason: `${stale.file} names ${stale.address}, but dproxy listens on ${listen.join(', ')}` }
  return { configured: false, reason: `no configuration of ${client} names dproxy for ${DOCKER_HUB}` }
}

const setupTarget: Record<DoctorClient, string> = { docker: 'docker', ctr: 'containerd', podman: 'podman', buildkit: 'buildkit', k3s: 'k3s' }

interface Puller {
  /** Skips the client (not running) when it gives a reason. */
  reachable(): Promise<string | undefined>
  configured(): Promise<Found['named']>
  pull(ref: string): Promise<RunResult>
  remove(ref: string): Promise<unknown>
}

function pullers(c: Context, run: Runner): Record<'docker' | 'ctr' | 'podman', Puller> {
  const { env } = c.o
  const timeoutMs = c.o.pullTimeoutMs ?? 120_000
  const quick = { env, timeoutMs: 20_000 }
  let info = ''
  let hostsDir: { dir: string; shown: string } | undefined
  const dirOf = async () => (hostsDir ??= await containerdHostsDir(c))
  return {
    docker: {
      async reachable() {
        const r = await run('docker', ['version', '--format', '{{.Server.Version}}'], quick)
        if (r.code !== 0) return `no Docker daemon answers${env.DOCKER_HOST ? ` at ${env.DOCKER_HOST}` : ''}: ${lastLine(r.stderr)}`
        info = (await run('docker', ['info', '--format', '{{json .RegistryConfig.Mirrors}}'], quick)).stdout.trim()
        return undefined
      },
      configured: () => dockerConfig(c, info),
      pull: (ref) => run('docker', ['pull', ref], { env, timeoutMs }),
      remove: (ref) => run('docker', ['image', 'rm', ref], quick),
    },
    ctr: {
      async reachable() {
        const r = await run('ctr', ['version'], quick)
        return r.code === 0 ? undefined : `containerd does not answer at ${env.CONTAINERD_ADDRESS ?? '/run/containerd/containerd.sock'}: ${lastLine(r.stderr)}`
      },
      async configured() {
        const d = await dirOf()
        return hostsTomlMirrors(d.dir, d.shown)
      },
      pull: async (ref) => run('ctr', ['images', 'pull', '--hosts-dir', (await dirOf()).dir, ref], { env, timeoutMs }),
      remove: (ref) => run('ctr', ['images', 'rm', ref], quick),
    },
    podman: {
      reachable: async () => undefined,
      configured: () => podmanConfig(c),
      pull: (ref) => run('podman', ['pull', ref], { env, timeoutMs }),
      remove: (ref) => run('podman', ['rmi', ref], quick),
    },
  }
}

async function checkClient(c: Context, client: DoctorClient, snapshot: StatusSnapshot, run: Runner): Promise<ClientReport> {
  const bins: Record<DoctorClient, string[]> = {
    docker: ['docker'],
    ctr: ['ctr'],
    podman: ['podman'],
    buildkit: ['buildkitd', 'docker-buildx'],
    k3s: ['k3s', 'rke2'],
  }
  const skipped = (reason: string): ClientReport => ({ client, state: 'skipped', configured: false, verified: false, reason })
  let installed = false
  for (const bin of bins[client]) if (await onPath(bin, c.o.env)) installed = true
  if (!installed) return skipped(`${client} is not installed (${bins[client].join(' or ')} not on PATH)`)
  const fix = `dproxy setup ${setupTarget[client]}${client === 'docker' ? ' --restart' : ''}`

  if (client === 'buildkit' || client === 'k3s') {
    const judged = judgeConfig(client, await (client === 'buildkit' ? buildkitConfig(c) : k3sConfig(c)), c.listen)
    if (!judged.configured) return { client, state: 'broken', configured: false, verified: false, reason: judged.reason, fix }
    return { client, state: 'ok', configured: true, verified: false, reason: `${judged.reason}; configured only (doctor pulls with docker, ctr and podman)` }
  }

  const p = pullers(c, run)[client]
  const down = await p.reachable()
  if (down !== undefined) return skipped(down)
  const judged = judgeConfig(client, await p.configured(), c.listen)
  if (c.remote !== undefined) return checkRemote(c.remote, client, p, judged, fix)
  const url = snapshot.daemon.url
  if (!snapshot.daemon.running || url === null) {
    return { client, state: judged.configured ? 'skipped' : 'broken', configured: judged.configured, verified: false, reason: `${judged.reason}; not verified: dproxy is not running`, ...(judged.configured ? {} : { fix }) }
  }
  const nonce = `${client}-${randomBytes(6).toString('hex')}`
  const ref = `${DOCKER_HUB}/${PROBE_REPOSITORY}:${nonce}`
  const pulled = await p.pull(ref)
  const hits = (await (await daemonClient(c.o))?.probeHits(nonce)) ?? []
  await p.remove(ref)
  if (hits.length > 0) {
    const how = hits[0]!
    return {
      client,
      state: 'ok',
      configured: judged.configured,
      verified: true,
      reason: `a pull of ${ref} reached dproxy (${how.route === 'ns' ? '?ns=' : how.route === 'path' ? 'registry path' : 'mirror root'}, ${how.userAgent.split(' ')[0] || 'no user agent'}); ${judged.reason}`,
    }
  }
  const how = pulled.code === 0 ? `the pull of ${ref} succeeded without reaching dproxy` : `the pull of ${ref} failed: ${lastLine(pulled.stderr) || `exit ${pulled.code}`}`
  return {
    client,
    state: 'broken',
    configured: judged.configured,
    verified: false,
    reason: `${client} does not go through dproxy: ${how}; ${judged.reason}`,
    fix,
  }
}

/** A client of a team server: its pull of the probe succeeds only through dproxy (the origin has no such repository). */
async function checkRemote(server: string, client: DoctorClient, p: Puller, judged: { configured: boolean; reason: string }, fix: string): Promise<ClientReport> {
  const ref = `${DOCKER_HUB}/${PROBE_REPOSITORY}:${client}-${randomBytes(6).toString('hex')}`
  const pulled = await p.pull(ref)
  await p.remove(ref)
  if (pulled.code === 0) {
    return { client, state: 'ok', configured: judged.configured, verified: true, reason: `a pull of ${ref} succeeded, which only ${server} answers; ${judged.reason}` }
  }
  const err = lastLine(pulled.stderr) || `exit ${pulled.code}`
  const host = new URL(server).host
  const refused = /unauthori[sz]ed|authentication required|no basic auth|401/i.test(err)
  const login = client === 'ctr' ? 'ctr images pull --user NAME ...' : `${client} login ${host}`
  return {
    client,
    state: 'broken',
    configured: judged.configured,
    verified: false,
    reason: `the pull of ${ref} failed: ${err}; ${judged.reason}`,
    fix: !judged.configured
      ? `${fix} --server ${server} --fingerprint <the server's>`
      : refused
        ? `${login} (a token from dproxy token create on the server, or the values of dproxy env there)`
        : `run dproxy doctor on the server (${server})`,
  }
}

/** The running daemon's admin client, pinned to the certificate it serves when it speaks TLS (daemon.json says which). */
async function daemonClient(o: DoctorOptions): Promise<AdminClient | undefined> {
  return (await findDaemon(o.settings.cacheDir, { stateDir: o.settings.stateDir }).catch(() => undefined))?.client
}

/**
 * The chains pulls go through: the running daemon's (its status lists every
 * endpoint with its kind, the origin included, so nothing more is implied),
 * else the configured ones. `origins` puts each registry's origin where the
 * daemon has it, so an endpoint keeps its kind and whose login it sends.
 */
async function chainsInUse(o: DoctorOptions, snapshot: StatusSnapshot): Promise<ChainsInUse> {
  const url = snapshot.daemon.url
  if (snapshot.daemon.running && url !== null) {
    const status = await (await daemonClient(o))?.status({ probe: false }).catch(() => undefined)
    if (status?.endpoints && status.endpoints.length > 0) {
      const overrides: Record<string, string[]> = {}
      const origins: Record<string, string> = {}
      for (const e of [...status.endpoints].sort((a, b) => a.position - b.position)) {
        ;(overrides[e.registry] ??= []).push(e.kind === 'origin' ? ORIGIN_KEYWORD : e.endpoint)
        if (e.kind === 'origin') origins[e.registry] = e.endpoint
      }
      return { overrides, noOrigin: true, origins, daemon: status.endpoints }
    }
    if (status?.upstreams) {
      return { overrides: Object.fromEntries(status.upstreams.map((u) => [u.registry, u.endpoints ?? u.url])), noOrigin: true, origins: {}, daemon: [] }
    }
  }
  return { overrides: o.settings.upstreams, noOrigin: o.settings.noOrigin ?? false, origins: {}, daemon: [] }
}

interface ChainsInUse {
  overrides: UpstreamMap
  noOrigin: boolean | readonly string[]
  origins: Record<string, string>
  /** The running daemon's view of each endpoint (breaker, last answer); empty when none runs. */
  daemon: EndpointStatus[]
}

/**
 * What the doctor asks each endpoint for: Docker Hub's rate-limit probe (a
 * HEAD is no pull). Elsewhere it is likely missing, and a 404 still shows the
 * login and token exchange passed. Never the clients' probe repository, which
 * no upstream is ever asked about.
 */
const PROBE_MANIFEST = RATE_LIMIT_PROBE

/**
 * Every endpoint of every registry pulls go to, in the order asked: does it
 * answer GET /v2/ (an endpoint with another behind it within the breaker
 * probe's short limit, as the daemon asks it), does its own login or token
 * dance let it answer a HEAD of the probe manifest (a 401/403 names the
 * `dproxy login` that fixes it), and what the running daemon knows of it
 * (breaker down, which endpoint answered its latest request).
 */
async function upstreamChecks(o: DoctorOptions, snapshot: StatusSnapshot): Promise<{ checks: Check[]; endpoints: EndpointReport[] }> {
  const now = o.now ?? Date.now
  const inUse = await chainsInUse(o, snapshot)
  const { Upstreams } = await import('../upstream/client.js')
  const chain = {
    ...(o.settings.chainConnectTimeoutMs !== undefined ? { connectMs: o.settings.chainConnectTimeoutMs } : {}),
    ...(o.settings.chainFirstByteTimeoutMs !== undefined ? { firstByteMs: o.settings.chainFirstByteTimeoutMs } : {}),
  }
  const upstreams = new Upstreams({
    overrides: inUse.overrides,
    noOrigin: inUse.noOrigin,
    origins: inUse.origins,
    timeouts: { connectMs: 5000, headersMs: 5000, bodyMs: 5000 },
    chainTimeouts: chain,
    ...(o.credentials ? { credentials: o.credentials } : {}),
  })
  const checks: Check[] = []
  const endpoints: EndpointReport[] = []
  try {
    for (const registry of [DOCKER_HUB, ...Object.keys(inUse.overrides).filter((r) => r !== DOCKER_HUB)]) {
      const members = upstreams.get(registry).members()
      const daemon = inUse.daemon.filter((e) => e.registry === registry)
      const last = servedLast(daemon).get(registry)
      const found: EndpointReport[] = []
      for (const [position, e] of members.entries()) {
        const isLast = position === members.length - 1
        const known = daemon.find((d) => d.position === position && d.endpoint === e.spec.label)
        found.push(await checkEndpoint(e, { registry, position, last: isLast, now, known, servedLast: last === e.spec.label }))
      }
      endpoints.push(...found)
      const chained = found.length > 1
      const anyAnswers = found.some((f) => f.reachable)
      for (const f of found) checks.push(endpointCheck(f, { chained, anyAnswers, tags: snapshot.cache.tags }))
    }
  } finally {
    await upstreams.close()
  }
  return { checks, endpoints }
}

interface EndpointContext {
  registry: string
  position: number
  last: boolean
  now: () => number
  known: EndpointStatus | undefined
  servedLast: boolean
}

async function checkEndpoint(e: EndpointClient, c: EndpointContext): Promise<EndpointReport> {
  const base: Omit<EndpointReport, 'reachable' | 'reach' | 'auth' | 'authDetail'> = {
    registry: c.registry,
    endpoint: e.spec.label,
    kind: e.spec.kind,
    position: c.position,
    last: c.last,
    servedLast: c.servedLast,
    ...(c.known ? { up: c.known.up } : {}),
    ...(c.known?.lastServedAt !== undefined ? { lastServedAt: c.known.lastServedAt } : {}),
  }
  let status: number
  let skewSeconds: number | undefined
  try {
    const res = await fetch(new URL('/v2/', e.base), { redirect: 'manual', signal: AbortSignal.timeout(c.last ? 5000 : PROBE_TIMEOUT_MS) })
    await res.body?.cancel().catch(() => {})
    status = res.status
    const date = Date.parse(res.headers.get('date') ?? '')
    if (!Number.isNaN(date)) skewSeconds = Math.round((c.now() - date) / 1000)
  } catch (err) {
    const why = err instanceof Error ? ((err.cause as Error | undefined)?.message ?? err.message) : String(err)
    return { ...base, reachable: false, reach: `is unreachable (${why})`, auth: 'unknown', authDetail: 'not tried: it does not answer' }
  }
  const reach = `answers (HTTP ${status})`
  const { repository, tag } = PROBE_MANIFEST
  const auth = await e.headManifest(repository, tag, { probe: true }).then(
    () => ({ auth: 'ok' as const, authDetail: `auth works (HEAD ${repository}:${tag} answered)` }),
    (err: unknown) => {
      if (!isDproxyError(err)) return { auth: 'unknown' as const, authDetail: `HEAD ${repository}:${tag} failed: ${String(err)}` }
      if (err.code === 'UNAUTHORIZED' || err.code === 'DENIED') {
        return { auth: 'refused' as const, authDetail: err.message, fix: `dproxy login ${e.spec.credentialKey}` }
      }
      if (err.code === 'MANIFEST_UNKNOWN' || err.code === 'NAME_UNKNOWN') {
        return { auth: 'ok' as const, authDetail: `auth works (its token dance passed; it has no ${repository}:${tag})` }
      }
      return { auth: 'unknown' as const, authDetail: `HEAD ${repository}:${tag} failed: ${err.message}` }
    },
  )
  return { ...base, reachable: true, reach, ...auth, ...(skewSeconds !== undefined ? { skewSeconds } : {}) }
}

/** One endpoint as a line of the report: a single endpoint as before chains, a chain's with its place in it. */
function endpointCheck(f: EndpointReport, c: { chained: boolean; anyAnswers: boolean; tags: number }): Check {
  const who = c.chained ? `${f.position + 1}. ${f.endpoint} (${f.kind}${f.last ? ', last' : ''})` : f.endpoint
  const daemon = [
    ...(f.up === false ? [`the daemon has it down (skipped until a probe finds it back)`] : []),
    ...(c.chained && f.servedLast ? [`it answered the daemon's latest request${f.lastServedAt ? ` (${f.lastServedAt})` : ''}`] : []),
  ]
  const tail = daemon.length > 0 ? `; ${daemon.join('; ')}` : ''
  if (!f.reachable) {
    const then = !f.last
      ? 'pulls fall through to the next endpoint'
      : c.anyAnswers
        ? 'what the endpoints before it cannot answer fails'
        : `pulls are served from the cache only (${c.tags} tags cached)`
    return { name: f.registry, level: 'warn', detail: `${who} ${f.reach}: ${then}${tail}` }
  }
  const skew = f.skewSeconds !== undefined && Math.abs(f.skewSeconds) > 30 ? f.skewSeconds : undefined
  const clock = skew !== undefined ? `; this machine's clock is ${Math.abs(skew)} s ${skew > 0 ? 'ahead of' : 'behind'} its Date` : ''
  const level = f.auth === 'refused' || skew !== undefined ? 'warn' : 'ok'
  const fix = f.fix ?? (skew !== undefined ? 'sync the clock (timedatectl set-ntp true): tokens and TLS depend on it' : undefined)
  return { name: f.registry, level, detail: `${who} ${f.reach}${clock}; ${f.authDetail}${tail}`, ...(fix !== undefined ? { fix } : {}) }
}

async function daemonChecks(
  o: DoctorOptions,
  snapshot: StatusSnapshot,
  told: { address: string; bySetup: boolean },
  upstream: Check[],
): Promise<Check[]> {
  const checks: Check[] = []
  const daemon = snapshot.daemon
  checks.push(
    daemon.running
      ? { name: 'dproxy', level: 'ok', detail: `running (pid ${daemon.pid}, version ${daemon.version}), listening on ${daemon.listen.join(', ')}` }
      : { name: 'dproxy', level: 'fail', detail: 'not running', fix: 'dproxy start' },
  )
  if (daemon.running && snapshot.tls !== undefined && snapshot.tls.mode !== 'off') {
    const source = snapshot.tls.mode === 'auto' ? "dproxy's own CA, --tls auto" : (snapshot.tls.cert ?? '--tls-cert')
    checks.push(...(await daemonTlsChecks({ listen: daemon.listen, names: o.settings.tlsNames ?? [], source, now: (o.now ?? Date.now)() })))
  }
  if (daemon.running) {
    const where = told.bySetup ? `clients were told ${told.address} (dproxy setup)` : `clients are told ${told.address}`
    checks.push(
      pointsAt(told.address, daemon.listen)
        ? { name: 'address', level: 'ok', detail: where }
        : { name: 'address', level: 'fail', detail: `${where}, but dproxy listens on ${daemon.listen.join(', ')}`, fix: 'dproxy setup (again, for the new address)' },
    )
  }
  const cacheDir = snapshot.cacheDir
  const writable = await fs.access(cacheDir, constants.W_OK).then(
    () => undefined,
    (err: NodeJS.ErrnoException) => err.code ?? 'not writable',
  )
  checks.push(
    writable === undefined
      ? { name: 'cache', level: 'ok', detail: `${cacheDir} is writable` }
      : writable === 'ENOENT'
        ? { name: 'cache', level: daemon.running ? 'fail' : 'warn', detail: `${cacheDir} does not exist (dproxy creates it when it starts)` }
        : { name: 'cache', level: 'fail', detail: `${cacheDir} is not writable (${writable})`, fix: `chown -R "$(id -un)" ${cacheDir}` },
  )
  const disk = await diskSpace(cacheDir)
  if (disk) {
    const { free, total } = disk
    const low = free < 1024 ** 3 || (total > 0 && free / total < 0.05)
    checks.push({
      name: 'disk',
      level: low ? 'warn' : 'ok',
      detail: `${formatBytes(free)} free of ${formatBytes(total)}`,
      ...(low ? { fix: 'dproxy cache prune --max-size <size>, or dproxy config set maxSize <size>' } : {}),
    })
  }
  checks.push(...upstream)
  const hub = snapshot.rateLimit.find((r) => r.registry === DOCKER_HUB)
  if (hub) {
    const level = headroom(hub).level
    checks.push({
      name: 'rate limit',
      level: level === 'critical' || hub.probeError !== undefined ? 'warn' : 'ok',
      detail: `${DOCKER_HUB}: ${describeLimit(hub)}${hub.probeError !== undefined ? ` (token service or probe failed: ${hub.probeError})` : ''}`,
      ...(level === 'critical' ? { fix: 'dproxy login (an account has a higher limit)' } : {}),
    })
  }
  return checks
}

/**
 * Credential helpers docker's config names that the daemon would run and that
 * cannot work (not installed, failing): one check each, with the fix. Helpers
 * are asked `list`, which needs no server URL and prints no secret.
 */
export async function loginChecks(o: Pick<DoctorOptions, 'env' | 'settings'>, timeoutMs = 10_000): Promise<Check[]> {
  if (o.settings.dockerCredentials === false) return []
  const { checkHelpers } = await import('../credentials/docker-config.js')
  const report = await checkHelpers({ env: o.env, timeoutMs })
  if (report.problems.length === 0) {
    return report.helpers === 0 ? [] : [{ name: 'logins', level: 'ok', detail: `the credential helpers ${report.file} names answer` }]
  }
  return report.problems.map((p) => ({ name: 'logins', level: 'warn', detail: `${p.source} in ${p.file}: ${p.problem}`, fix: p.fix }))
}

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const snapshot = await collectStatus({
    cacheDir: o.settings.cacheDir,
    upstreams: o.settings.upstreams,
    ...(o.credentials ? { credentials: o.credentials } : {}),
  })
  const record = await readRecord(o.settings.stateDir, o.root).catch(() => undefined)
  const told = record ? { address: record.address, bySetup: true } : { address: (await clientAddress(o.settings)).address, bySetup: false }
  const server = record?.server
  const listen = server ? [record.address] : snapshot.daemon.running ? snapshot.daemon.listen : [told.address]
  const c: Context = { o, listen, sys: (p) => underRoot(o.root, p), ...(server ? { remote: server.url } : {}) }
  // A client of a team server: the route is the server's, and its upstreams are its own to check.
  const upstream = server ? { checks: [], endpoints: [] } : await upstreamChecks(o, snapshot)
  const checks = server ? await serverChecks({ ...record, server }) : await daemonChecks(o, snapshot, told, upstream.checks)
  checks.push(...(await loginChecks(o)))
  const clients: ClientReport[] = []
  // One client at a time: pulls through the same daemon should not blur each other's nonces or timings.
  for (const client of DOCTOR_CLIENTS) clients.push(await checkClient(c, client, snapshot, o.run ?? runCommand))
  return {
    ok: checks.every((ch) => ch.level !== 'fail') && clients.every((cl) => cl.state !== 'broken'),
    address: told.address,
    listen: server ? listen : snapshot.daemon.listen,
    checks,
    clients,
    endpoints: upstream.endpoints,
    recentFailures: snapshot.recentFailures,
  }
}
