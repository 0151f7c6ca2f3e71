// Installs hooks.mjs (transpiled TypeScript kept between test processes); package.json's
// "tap" section runs every test file with --import of this file.
import { register } from 'node:module'

register('./hooks.mjs', import.meta.url)
