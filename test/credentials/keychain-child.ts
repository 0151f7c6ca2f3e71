// Run by keychain.test.ts in a child process (inside dbus-run-session with a
// throw-away gnome-keyring, or with no D-Bus at all): opens the credential store
// the way the CLI would and prints one JSON line describing what happened.
// Everything it touches comes from the environment the test gives it.

import { openCredentialStore } from '../../src/credentials/index.js'

const configDir = process.env.CHILD_CONFIG_DIR
const secret = process.env.CHILD_SECRET
if (!configDir || !secret) throw new Error('CHILD_CONFIG_DIR and CHILD_SECRET are required')

const fallbacks: string[] = []
const store = await openCredentialStore({ configDir, env: process.env, onFallback: (reason) => fallbacks.push(reason) })
const report: Record<string, unknown> = { kind: store.kind, fallbacks }

if (process.env.CHILD_ROUND_TRIP === '1') {
  await store.set('index.docker.io', { username: 'ann', secret })
  await store.set('ghcr.io', { username: 'bo', secret: `${secret}-2` })
  report.get = await store.get('docker.io')
  report.list = await store.list()
  report.deleted = await store.delete('docker.io')
  report.deletedAgain = await store.delete('docker.io')
  report.afterDelete = (await store.get('docker.io')) ?? null
  report.listAfterDelete = await store.list()
  await store.delete('ghcr.io')
}

process.stdout.write(`${JSON.stringify(report)}\n`)
// A keychain call that never answered would otherwise hold the process open.
process.exit(0)
