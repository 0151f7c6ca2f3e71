// Entry point of the `dproxy` binary (bin/dproxy.js imports the built copy).

import { runCli } from './program.js'

const code = await runCli(process.argv.slice(2), { env: process.env, stdout: process.stdout, stderr: process.stderr })
process.exitCode = code
