import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { certificateFingerprint, parseFingerprint } from '../src/fingerprint.js'

t.test('certificateFingerprint agrees with openssl, from PEM and from DER', async (t) => {
  const dir = t.testdir()
  const pem = join(dir, 'ca.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=test CA',
    '-days', '1', '-keyout', join(dir, 'key.pem'), '-out', pem], { stdio: 'ignore' })
  const openssl = execFileSync('openssl', ['x509', '-in', pem, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim()
  const ours = certificateFingerprint(readFileSync(pem, 'utf8'))
  t.match(ours, /^sha256:[0-9a-f]{64}$/)
  t.equal(parseFingerprint(openssl), ours, `openssl's line (${openssl.slice(0, 30)}...) names the same certificate`)
  const der = execFileSync('openssl', ['x509', '-in', pem, '-outform', 'DER'])
  t.equal(certificateFingerprint(der), ours)
})

t.test('parseFingerprint takes both spellings and nothing loose', async (t) => {
  const hex = 'ab'.repeat(32)
  const colons = Array.from({ length: 32 }, () => 'AB').join(':')
  for (const s of [`sha256:${hex}`, `SHA256:${hex.toUpperCase()}`, hex, colons, `sha256:${colons}`, `SHA256 Fingerprint=${colons}`, ` sha256:${hex}\n`]) {
    t.equal(parseFingerprint(s), `sha256:${hex}`, JSON.stringify(s))
  }
  for (const s of ['', 'sha256:', `sha256:${hex.slice(2)}`, `sha256:${hex}00`, `md5:${hex}`, `sha1:${hex}`, colons.slice(3), `${colons}:AB`, 'AB:'.repeat(31) + 'A:B', `sha256:${hex.slice(1)}g`]) {
    t.equal(parseFingerprint(s), undefined, JSON.stringify(s))
  }
})
