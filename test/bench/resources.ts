// Everything the bench starts or creates is registered here the moment it
// exists, and released in reverse order at the end, on failure, on a signal or
// when the time budget runs out. A measurement may also release one thing early
// (a daemon it no longer needs) without the final release doing it twice.

export class Resources {
  private readonly stack: Array<{ what: string; release: () => Promise<void> | void }> = []
  private releasing: Promise<void> | undefined

  /** Registers `release`; the returned function runs it now (once) and forgets it. */
  defer(what: string, release: () => Promise<void> | void): () => Promise<void> {
    const entry = { what, release }
    this.stack.push(entry)
    return async () => {
      const i = this.stack.indexOf(entry)
      if (i < 0) return
      this.stack.splice(i, 1)
      await entry.release()
    }
  }

  /** Releases everything, newest first; a failure is reported and the rest still released. */
  releaseAll(report: (msg: string) => void): Promise<void> {
    this.releasing ??= (async () => {
      while (this.stack.length > 0) {
        const entry = this.stack.pop()!
        try {
          await entry.release()
        } catch (err) {
          report(`cleanup of ${entry.what} failed: ${(err as Error).message}`)
        }
      }
    })()
    return this.releasing
  }
}
