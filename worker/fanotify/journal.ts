// The in-flight record of a fanotify worker. A response names its event by
// the event's fd number in the process that read it, so a worker that dies
// leaves events nobody else can name, and their readers blocked for good.
// Each event is therefore read straight into a slot of this journal, a
// MAP_SHARED file: the kernel's copy of the event into the slot is the
// record, with no moment between "read" and "recorded" for a kill to fall
// in. The blob's path follows; a kill before it leaves the successor to ask
// the dead worker's fd keeper (keeper.ts), or, without one, to try every
// blob. The slot is cleared once the event is answered.
//
// Slot layout (SLOT_LEN bytes): [0, 48) the event as read (its event_len
// field is nonzero while the slot is in use); [48, 50) the path's length;
// [50, SLOT_LEN) the path relative to the blob dir.
import { FanEvent, PRE_CONTENT_EVENT_LEN, parseEvent } from './events';

export const SLOT_LEN = 256;
export const SLOTS = 1024;
export const JOURNAL_LEN = SLOT_LEN * SLOTS;
const PATH_AT = PRE_CONTENT_EVENT_LEN + 2;
const MAX_PATH = SLOT_LEN - PATH_AT;

export interface JournalEntry {
  slot: number;
  event: FanEvent;
  /** the blob's path relative to the blob dir; absent if the worker died before recording it */
  path?: string;
  /** the pid of the (dead) worker whose journal held it */
  worker?: number;
  /** without a path: the file its fd still names in the dead worker's fd table, kept by its keeper (keeper.ts) */
  keptFile?: string;
}

export class EventJournal {
  private readonly free: number[] = [];

  /** buf: JOURNAL_LEN bytes, all zero (a new journal) */
  constructor(private readonly buf: Buffer) {
    if (buf.length !== JOURNAL_LEN) throw new RangeError(`journal of ${buf.length} bytes, expected ${JOURNAL_LEN}`);
    for (let i = SLOTS - 1; i >= 0; i--) this.free.push(i);
  }

  /** A free slot's event area to read one event into (exactly one fits), or null when all are in use. */
  take(): { slot: number; area: Buffer } | null {
    const slot = this.free.pop();
    if (slot === undefined) return null;
    return { slot, area: this.buf.subarray(slot * SLOT_LEN, slot * SLOT_LEN + PRE_CONTENT_EVENT_LEN) };
  }

  /** Gives back a slot that received nothing. */
  untake(slot: number): void {
    this.free.push(slot);
  }

  get inUse(): number {
    return SLOTS - this.free.length;
  }

  setPath(slot: number, rel: string): void {
    const o = slot * SLOT_LEN;
    const n = Buffer.byteLength(rel);
    if (n > MAX_PATH) return; // not recorded: a successor tries every blob, which is slower but right
    this.buf.write(rel, o + PATH_AT, n);
    this.buf.writeUInt16LE(n, o + PRE_CONTENT_EVENT_LEN);
  }

  /** The event is answered: the slot is free again. */
  clear(slot: number): void {
    const o = slot * SLOT_LEN;
    this.buf.writeUInt16LE(0, o + PRE_CONTENT_EVENT_LEN);
    this.buf.writeUInt32LE(0, o); // event_len last: a kill before it leaves a record that is answered twice, which is harmless
    this.free.push(slot);
  }
}

/** The events a (dead) worker's journal holds unanswered. Slots that do not parse are skipped (reported in `bad`). */
export function readJournal(buf: Buffer): { entries: JournalEntry[]; bad: number } {
  const entries: JournalEntry[] = [];
  let bad = 0;
  for (let slot = 0; slot * SLOT_LEN + SLOT_LEN <= buf.length; slot++) {
    const o = slot * SLOT_LEN;
    if (buf.readUInt32LE(o) === 0) continue;
    try {
      const event = parseEvent(buf.subarray(o, o + PRE_CONTENT_EVENT_LEN));
      const n = buf.readUInt16LE(o + PRE_CONTENT_EVENT_LEN);
      const path = n > 0 && n <= MAX_PATH ? buf.toString('utf8', o + PATH_AT, o + PATH_AT + n) : undefined;
      entries.push({ slot, event, ...(path ? { path } : {}) });
    } catch {
      bad++;
    }
  }
  return { entries, bad };
}
