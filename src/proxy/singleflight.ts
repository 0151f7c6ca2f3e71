// Collapses concurrent calls for the same key into one: twenty clients that
// ask for the same tag at once cause one upstream HEAD (and at most one GET).
// State belongs to the instance, never to the module.

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
