// Who still waits for a shared Range GET. One GET serves every fill (and
// prefetch run) that joined it, so one READ's deadline must not abort it
// while another caller still waits; but a GET that nobody waits for any more
// is aborted, or a hung request would hold one of the host's scheduler slots.
import { AbortedError } from '../../registry/errors';

/**
 * One caller (a fill, a prefetch run) for as long as it waits: until its
 * signal aborts (a READ deadline, a cancelled prefetch) or it ends. It holds
 * one abort listener however many GETs it joins.
 */
export class Waiter {
  private readonly leaves = new Set<() => void>();
  private ended = false;
  private readonly stopped: Promise<never>;
  private stop!: (e: Error) => void;
  private readonly onAbort = () => {
    this.stop(new AbortedError(this.what));
    this.end();
  };

  constructor(readonly signal: AbortSignal | undefined, private readonly what: string) {
    this.stopped = new Promise<never>((_, reject) => (this.stop = reject));
    this.stopped.catch(() => undefined);
    if (signal?.aborted) this.onAbort();
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** still waiting: neither ended nor given up */
  get active(): boolean {
    return !this.ended;
  }

  /** Throws AbortedError if its signal has aborted. */
  check(): void {
    if (this.signal?.aborted) throw new AbortedError(this.what);
  }

  /** p, or an AbortedError as soon as the signal aborts (p itself goes on for whoever else waits). */
  wait<T>(p: Promise<T>): Promise<T> {
    if (!this.signal) return p;
    const r = Promise.race([p, this.stopped]);
    r.catch(() => undefined); // a caller may drop r (it only joined to promote a GET)
    return r;
  }

  /** Calls fn once when the waiter stops waiting; returns a function that unregisters it. */
  onLeave(fn: () => void): () => void {
    if (this.ended) {
      fn();
      return () => undefined;
    }
    this.leaves.add(fn);
    return () => this.leaves.delete(fn);
  }

  /** The caller is done (or gave up): it waits for nothing any more. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const fn of this.leaves) fn();
    this.leaves.clear();
  }
}

/** A GET's abort controller: aborted once every waiter that joined it has left before it settled. */
export class SharedFetch {
  private readonly ac = new AbortController();
  private live = 0;
  private done = false;
  private readonly detach: Array<() => void> = [];

  constructor(private readonly what: string) {}

  /** for the request (and its retries) */
  get signal(): AbortSignal {
    return this.ac.signal;
  }

  get aborted(): boolean {
    return this.ac.signal.aborted;
  }

  /** Counts w as waiting until it leaves; a fetch whose only waiters have all left is aborted. */
  join(w: Waiter): void {
    if (this.done || this.aborted) return;
    this.live++;
    this.detach.push(w.onLeave(() => {
      if (--this.live === 0) this.abort();
    }));
  }

  /** The GET settled: waiters leaving no longer matter. */
  settle(): void {
    this.done = true;
    for (const d of this.detach.splice(0)) d();
  }

  private abort(): void {
    if (!this.done) this.ac.abort(new AbortedError(`${this.what}: nobody waits for it any more`));
  }
}
