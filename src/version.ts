// The version users see in `--version`, the status endpoint and the User-Agent
// sent upstream. Read from package.json so there is one place to bump it; the
// relative path holds from both src/ (tests) and dist/ (the built binary).

import { readFileSync } from 'node:fs'

export const VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version

export const USER_AGENT = `dproxy/${VERSION} (node ${process.versions.node}; ${process.platform})`
