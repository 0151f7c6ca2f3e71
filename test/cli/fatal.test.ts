import { CommanderError } from 'commander'
import t from 'tap'
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, FatalError, UsageError, toFatal } from '../../src/cli/fatal.js'
import { DproxyError } from '../../src/errors.js'

t.test('every error a command ends with becomes a FatalError carrying its exit code', async (t) => {
  const cases: Array<[string, unknown, number, string]> = [
    ['a FatalError as it is', new FatalError('gone', EXIT_FAILURE), EXIT_FAILURE, 'gone'],
    ['a UsageError', new UsageError('expected --lines to be a number'), EXIT_USAGE, 'expected --lines to be a number'],
    ['--help (commander printed it)', new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'), EXIT_OK, ''],
    ['--version', new CommanderError(0, 'commander.version', '1.0.0'), EXIT_OK, ''],
    ['an unknown option (commander printed it)', new CommanderError(1, 'commander.unknownOption', "error: unknown option '--x'"), EXIT_USAGE, ''],
    ['a bad value from the core', new DproxyError('USAGE', "expected maxAge like '5m'"), EXIT_USAGE, "expected maxAge like '5m'"],
    ['a bad setting', new DproxyError('CONFIG_INVALID', 'bad port'), EXIT_USAGE, 'bad port'],
    ['any other DproxyError', new DproxyError('START_FAILED', 'dproxy is not running'), EXIT_FAILURE, 'dproxy is not running'],
    ['a plain Error', new Error('EACCES: permission denied'), EXIT_FAILURE, 'EACCES: permission denied'],
    ['something thrown that is not an Error', 'boom', EXIT_FAILURE, 'boom'],
  ]
  for (const [what, err, exitCode, message] of cases) {
    const fatal = toFatal(err)
    t.ok(fatal instanceof FatalError, what)
    t.equal(fatal.exitCode, exitCode, `${what}: exit ${exitCode}`)
    t.equal(fatal.message, message, `${what}: message`)
  }
  const usage = new UsageError('x')
  t.equal(toFatal(usage), usage, 'not wrapped again')
})
