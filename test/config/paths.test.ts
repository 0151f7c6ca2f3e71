import t from 'tap'
import { configDir, defaultCacheDir, expandHome, homeDir, stateDir } from '../../src/config/paths.js'

const linuxHome = { HOME: '/home/ann' }
const macHome = { HOME: '/Users/ann' }
const winHome = { USERPROFILE: 'C:\\Users\\ann', APPDATA: 'C:\\Users\\ann\\AppData\\Roaming', LOCALAPPDATA: 'C:\\Users\\ann\\AppData\\Local' }

t.test('platform defaults', async (t) => {
  const cases: Array<[NodeJS.Platform, NodeJS.ProcessEnv, string, string, string]> = [
    ['linux', linuxHome, '/home/ann/.config/dproxy', '/home/ann/.local/share/dproxy', '/home/ann/.local/state/dproxy'],
    ['freebsd', linuxHome, '/home/ann/.config/dproxy', '/home/ann/.local/share/dproxy', '/home/ann/.local/state/dproxy'],
    [
      'darwin',
      macHome,
      '/Users/ann/Library/Preferences/dproxy',
      '/Users/ann/Library/Application Support/dproxy',
      '/Users/ann/Library/Application Support/dproxy/state',
    ],
    [
      'win32',
      winHome,
      'C:\\Users\\ann\\AppData\\Roaming\\dproxy\\Config',
      'C:\\Users\\ann\\AppData\\Local\\dproxy\\Data',
      'C:\\Users\\ann\\AppData\\Local\\dproxy\\State',
    ],
  ]
  for (const [platform, env, config, cache, state] of cases) {
    t.equal(configDir(env, platform), config, `${platform} config`)
    t.equal(defaultCacheDir(env, platform), cache, `${platform} cache`)
    t.equal(stateDir(env, platform), state, `${platform} state`)
  }
})

t.test('Windows without APPDATA/LOCALAPPDATA uses the profile', async (t) => {
  const env = { USERPROFILE: 'C:\\Users\\bo' }
  t.equal(configDir(env, 'win32'), 'C:\\Users\\bo\\AppData\\Roaming\\dproxy\\Config')
  t.equal(defaultCacheDir(env, 'win32'), 'C:\\Users\\bo\\AppData\\Local\\dproxy\\Data')
  t.equal(stateDir(env, 'win32'), 'C:\\Users\\bo\\AppData\\Local\\dproxy\\State')
})

t.test('XDG variables on Linux, only when absolute, not on macOS', async (t) => {
  const env = { ...linuxHome, XDG_CONFIG_HOME: '/x/config', XDG_DATA_HOME: '/x/data', XDG_STATE_HOME: '/x/state' }
  t.equal(configDir(env, 'linux'), '/x/config/dproxy')
  t.equal(defaultCacheDir(env, 'linux'), '/x/data/dproxy')
  t.equal(stateDir(env, 'linux'), '/x/state/dproxy')
  t.equal(configDir({ ...macHome, XDG_CONFIG_HOME: '/x/config' }, 'darwin'), '/Users/ann/Library/Preferences/dproxy')
  t.equal(configDir({ ...linuxHome, XDG_CONFIG_HOME: 'relative' }, 'linux'), '/home/ann/.config/dproxy')
  t.equal(configDir({ ...linuxHome, XDG_CONFIG_HOME: '' }, 'linux'), '/home/ann/.config/dproxy')
})

t.test('DPROXY_* overrides win everywhere and expand ~', async (t) => {
  const env = {
    ...linuxHome,
    XDG_CONFIG_HOME: '/x/config',
    DPROXY_CONFIG_DIR: '/o/config',
    DPROXY_CACHE_DIR: '~/cache',
    DPROXY_STATE_DIR: '/o/state/',
  }
  t.equal(configDir(env, 'linux'), '/o/config')
  t.equal(defaultCacheDir(env, 'linux'), '/home/ann/cache')
  t.equal(stateDir(env, 'linux'), '/o/state')
  t.equal(configDir({ ...macHome, DPROXY_CONFIG_DIR: '/o/c' }, 'darwin'), '/o/c')
  t.equal(configDir({ ...winHome, DPROXY_CONFIG_DIR: 'D:\\dp' }, 'win32'), 'D:\\dp')
})

t.test('home and ~ expansion', async (t) => {
  t.equal(homeDir(linuxHome, 'linux'), '/home/ann')
  t.equal(homeDir({ USERPROFILE: 'C:\\Users\\x', HOME: '/ignored' }, 'win32'), 'C:\\Users\\x')
  t.type(homeDir({}, 'linux'), 'string', 'falls back to the OS answer')
  t.equal(expandHome('~', linuxHome, 'linux'), '/home/ann')
  t.equal(expandHome('~/a/b', linuxHome, 'linux'), '/home/ann/a/b')
  t.equal(expandHome('~bob/a', linuxHome, 'linux'), '~bob/a', 'other users are not guessed')
  t.equal(expandHome('/abs', linuxHome, 'linux'), '/abs')
  t.equal(expandHome('~\\x', winHome, 'win32'), 'C:\\Users\\ann\\x')
})
