// The file store against the store contract; store.test.ts covers what only
// it has (layout, modes, temp-file names, migration, disk failures).

import t from 'tap'
import { Store } from '../../src/store/store.js'
import { storeContract } from './contract.js'

storeContract(t, async (t) => Store.open(t.testdir()))
