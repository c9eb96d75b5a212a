// containerd's filter language (containerd/filters), used by List:
//   selectors := selector ("," selector)*      all must match
//   selector  := fieldpath [op value]         op: == != ~= ; no op = presence
//   fieldpath := field ("." field)*           field: [A-Za-z0-9_]+ or "quoted"
// Several filter strings are OR-ed. Values may be quoted with " (or / and | for ~=).
//
// ~= is a regular expression in RE2 syntax, matched in linear time, as
// containerd's Go does (regexp). A backtracking engine took 19.5 s over
// `^redos-(a|a)+$` and a 31-character name, with every other client waiting.
import { RE2JS } from 're2js';
import { excerpt, invalidArgument } from './storage/errors';
import { Info, kindName } from './storage/info';

/** All of one List's filter strings; containerd's own are a few hundred bytes. */
export const MAX_FILTERS_BYTES = 64 << 10;
/** One regular expression's text. */
export const MAX_REGEX_BYTES = 1024;
/**
 * RE2 instructions in all of one List's regular expressions (programSize; a
 * 64-character digest class costs 64). Matching is linear in the value, but
 * also in the program when RE2's DFA gives up: `.*a.{450}$` takes 0.5 s over
 * one 4 KiB value here. So List runs regular expressions in worker threads
 * (filter-pool.ts), and this bounds what one value can cost them.
 */
export const MAX_REGEX_PROGRAM = 500;

type Op = 'present' | '==' | '!=' | '~=';
interface Selector {
  path: string[];
  op: Op;
  value: string;
  re?: RE2JS;
}
/** OR of ANDs. An empty list matches everything. */
export type Filter = Selector[][];

const isFieldChar = (c: string) => /[A-Za-z0-9_]/.test(c);

class Scanner {
  pos = 0;
  constructor(readonly input: string) {}
  error(msg: string, at = this.pos): never {
    throw invalidArgument(`filters: parse error: [${excerpt(this.input)}] at ${at}: ${msg}`);
  }
  skipSpace() {
    while (this.pos < this.input.length && /\s/.test(this.input[this.pos])) this.pos++;
  }
  peek(): string {
    this.skipSpace();
    return this.input[this.pos] ?? '';
  }
  quoted(): string {
    const quote = this.input[this.pos];
    const start = this.pos;
    let out = '';
    this.pos++;
    for (;;) {
      const c = this.input[this.pos];
      if (c === undefined || c === '\n') this.error('quoted literal not terminated', start);
      this.pos++;
      if (c === quote) return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = this.input[this.pos++];
      const simple: Record<string, string> = { a: '\x07', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v', '\\': '\\' };
      if (e === quote) out += quote;
      else if (e !== undefined && e in simple) out += simple[e];
      else if (e === 'x' || e === 'u' || e === 'U') {
        const n = e === 'x' ? 2 : e === 'u' ? 4 : 8;
        const hex = this.input.slice(this.pos, this.pos + n);
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.error('illegal escape', this.pos);
        this.pos += n;
        out += String.fromCodePoint(parseInt(hex, 16));
      } else if (e !== undefined && /[0-7]/.test(e)) {
        const oct = e + this.input.slice(this.pos, this.pos + 2);
        if (!/^[0-7]{3}$/.test(oct)) this.error('illegal escape', this.pos);
        this.pos += 2;
        out += String.fromCharCode(parseInt(oct, 8));
      } else this.error('illegal escape', this.pos - 1);
    }
  }
  field(): string {
    const c = this.peek();
    if (c === '"') return this.quoted();
    const start = this.pos;
    while (this.pos < this.input.length && isFieldChar(this.input[this.pos])) this.pos++;
    if (this.pos === start) this.error('expected field or quoted');
    return this.input.slice(start, this.pos);
  }
  operator(): Op {
    this.skipSpace();
    const start = this.pos;
    while ('=!~'.includes(this.input[this.pos] ?? 'x')) this.pos++;
    const op = this.input.slice(start, this.pos);
    if (op === '==' || op === '!=' || op === '~=') return op;
    return this.error(op ? `unsupported operator "${excerpt(op)}"` : 'expected an operator ("=="|"!="|"~=")', start);
  }
  value(allowAltQuotes: boolean): string {
    const c = this.peek();
    if (c === '"' || (allowAltQuotes && (c === '/' || c === '|'))) return this.quoted();
    if (c === '/' || c === '|') this.error('invalid quote encountered');
    const start = this.pos;
    while (this.pos < this.input.length && this.input[this.pos] !== ',' && !/\s/.test(this.input[this.pos])) this.pos++;
    if (this.pos === start) this.error('expected value or quoted');
    return this.input.slice(start, this.pos);
  }
}

function compileRegex(s: Scanner, value: string): RE2JS {
  try {
    return RE2JS.compile(value);
  } catch (e) {
    return s.error(`bad regular expression: ${excerpt((e as Error).message, 256)}`);
  }
}

function parseOne(input: string, budget: { program: number }): Selector[] {
  const s = new Scanner(input);
  const all: Selector[] = [];
  for (;;) {
    const path = [s.field()];
    while (s.peek() === '.') {
      s.pos++;
      path.push(s.field());
    }
    const next = s.peek();
    let sel: Selector;
    if (next === ',' || next === '') sel = { path, op: 'present', value: '' };
    else {
      const op = s.operator();
      const value = s.value(op === '~=');
      sel = { path, op, value };
      if (op === '~=') {
        const n = Buffer.byteLength(value);
        if (n > MAX_REGEX_BYTES) s.error(`regular expression of ${n} bytes, more than ${MAX_REGEX_BYTES}`);
        const re = compileRegex(s, value);
        sel.re = re;
        budget.program -= re.programSize();
        if (budget.program < 0) s.error(`regular expressions too complex: more than ${MAX_REGEX_PROGRAM} RE2 instructions in all`);
      }
    }
    all.push(sel);
    const sep = s.peek();
    if (sep === '') return all;
    if (sep !== ',') s.error(`unexpected input: ${excerpt(sep)}`);
    s.pos++;
  }
}

/** Parses List's filter strings; an InvalidArgument error names the bad one. */
export function parseFilters(filters: string[]): Filter {
  const n = filters.reduce((sum, f) => sum + Buffer.byteLength(f), 0);
  if (n > MAX_FILTERS_BYTES) throw invalidArgument(`filters: ${n} bytes, more than ${MAX_FILTERS_BYTES}`);
  const budget = { program: MAX_REGEX_PROGRAM };
  return filters.filter((f) => f !== '').map((f) => parseOne(f, budget));
}

/** The snapshot fields a filter can see, as containerd's storage adaptor exposes them. */
function field(info: Info, path: string[]): string | undefined {
  switch (path[0]) {
    case 'kind':
      return info.kind === 0 ? undefined : kindName[info.kind];
    case 'name':
      return info.name;
    case 'parent':
      return info.parent;
    case 'labels': {
      const key = path.slice(1).join('.');
      return Object.prototype.hasOwnProperty.call(info.labels, key) ? info.labels[key] : undefined;
    }
    default:
      return undefined;
  }
}

function matchSelector(sel: Selector, info: Info): boolean {
  const v = field(info, sel.path);
  switch (sel.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v !== undefined && v === sel.value;
    case '!=':
      return (v ?? '') !== sel.value;
    case '~=':
      return sel.re!.test(v ?? '');
  }
}

export function matches(filter: Filter, info: Info): boolean {
  if (filter.length === 0) return true;
  return filter.some((all) => all.every((sel) => matchSelector(sel, info)));
}

/** Whether the filter runs a regular expression: List then matches off the event loop (filter-pool.ts). */
export function usesRegex(filter: Filter): boolean {
  return filter.some((all) => all.some((sel) => sel.op === '~='));
}

/** The part of info a filter reads: its name, parent and kind, and only the labels the filter names. */
export function filterView(filter: Filter, info: Info): Info {
  const labels: Record<string, string> = {};
  for (const sel of filter.flat()) {
    if (sel.path[0] !== 'labels') continue;
    const key = sel.path.slice(1).join('.');
    if (Object.prototype.hasOwnProperty.call(info.labels, key)) labels[key] = info.labels[key];
  }
  return { ...info, labels };
}
