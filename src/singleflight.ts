// Collapses concurrent calls for the same key into one: twenty clients that
// ask for the same tag at once cause one upstream HEAD (and at most one GET),
// and twenty requests that need the same upstream token one token request.
// A root file, so that upstream/ and proxy/ share the one implementation.
// State belongs to the instance, never to the module; a settled call (either
// way) is forgotten, so the next caller starts afresh.

export class SingleFlight<V> {
  private readonly calls = new Map<string, Promise<V>>()

  do(key: string, fn: () => Promise<V>): Promise<V> {
    let call = this.calls.get(key)
    if (!call) {
      call = fn().finally(() => this.calls.delete(key))
      this.calls.set(key, call)
    }
    return call
  }

  get size(): number {
    return this.calls.size
  }
}
