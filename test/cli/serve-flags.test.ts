// flagSettings is the one map from serve's flags to settings: a flag given
// sets its setting, a flag not given sets nothing (so the config file and
// DPROXY_* decide), and a `--no-x` flag sets its setting only when given.
import t from 'tap'
import { flagSettings } from '../../src/cli/serve-flags.js'

t.test('flags given become settings; flags absent and other options set nothing', async (t) => {
  t.same(flagSettings({}), {})
  t.same(flagSettings({ host: '127.0.0.1', upstream: ['docker.io=http://127.0.0.1:1'], auth: true, json: true }), {
    host: '127.0.0.1',
    upstreams: ['docker.io=http://127.0.0.1:1'],
    auth: true,
  })
})

t.test('--no-docker-credentials: commander says true when it is absent, which must not override the config', async (t) => {
  t.same(flagSettings({ dockerCredentials: true }), {})
  t.same(flagSettings({ dockerCredentials: false }), { dockerCredentials: false })
})

t.test('--no-origin sets noOrigin; the chain timeouts are settings', async (t) => {
  t.same(flagSettings({ origin: true }), {})
  t.same(flagSettings({ origin: false, chainConnectTimeout: '1s', chainFirstByteTimeout: '5s' }), {
    noOrigin: true,
    chainConnectTimeout: '1s',
    chainFirstByteTimeout: '5s',
  })
})
