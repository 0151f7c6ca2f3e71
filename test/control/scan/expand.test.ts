import t from 'tap'
import { expandVariables } from '../../../src/control/scan/expand.js'

const vars: Record<string, string> = { A: 'a', EMPTY: '' }
const lookup = (n: string) => vars[n]

t.test('expands the shell forms, keeps unknown variables and lists them', async (t) => {
  const cases: Array<[string, string, string[]]> = [
    ['x$A', 'xa', []],
    ['${A}-1', 'a-1', []],
    ['${B:-dflt}', 'dflt', []],
    ['${EMPTY:-dflt}', 'dflt', []],
    ['${EMPTY-dflt}', '', []],
    ['${B-${A}}', 'a', []],
    ['${A:+set}${B:+set}', 'set', []],
    ['$B/x:${C}', '$B/x:${C}', ['B', 'C']],
    ['${B:?required}', '${B:?required}', ['B']],
    ['${B:-$C}', '$C', ['C']],
    ['price $5', 'price $5', []],
  ]
  for (const [text, value, missing] of cases) t.strictSame(expandVariables(text, lookup), { value, missing }, text)
})

t.test('$$ is a literal dollar only where the format says so', async (t) => {
  t.equal(expandVariables('a$$A', lookup, { dollarEscape: true }).value, 'a$A')
  t.equal(expandVariables('a$$A', lookup).value, 'a$a')
})

t.test('forms it does not implement are flagged, not guessed', async (t) => {
  t.equal(expandVariables('${A#x}', lookup).unsupported, '${A#x}')
  t.equal(expandVariables('${A', lookup).unsupported, '${A')
})
