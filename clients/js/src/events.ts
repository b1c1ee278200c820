/** A small typed event emitter: `on(name, cb)` returns a function that removes `cb`. */

export class Emitter<Events extends { [K in keyof Events]: unknown }> {
  private listeners = new Map<keyof Events, Set<(arg: never) => void>>();
  /** Report a listener's exception (the client logs it; it never breaks the connection). */
  onListenerError: (error: unknown) => void = (error) => console.error("roomsync listener failed:", error);

  on<K extends keyof Events>(name: K, callback: (arg: Events[K]) => void): () => void {
    let set = this.listeners.get(name);
    if (set === undefined) this.listeners.set(name, (set = new Set()));
    set.add(callback as (arg: never) => void);
    return () => set!.delete(callback as (arg: never) => void);
  }

  emit<K extends keyof Events>(name: K, arg: Events[K]): void {
    const set = this.listeners.get(name);
    if (set === undefined) return;
    for (const cb of [...set]) {
      try {
        (cb as (arg: Events[K]) => void)(arg);
      } catch (error) {
        this.onListenerError(error);
      }
    }
  }

  has(name: keyof Events): boolean {
    return (this.listeners.get(name)?.size ?? 0) > 0;
  }
}
