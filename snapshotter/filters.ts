// containerd's filter language (containerd/filters), used by List:
//   selectors := selector ("," selector)*      all must match
//   selector  := fieldpath [op value]         op: == != ~= ; no op = presence
//   fieldpath := field ("." field)*           field: [A-Za-z0-9_]+ or "quoted"
// Several filter strings are OR-ed. Values may be quoted with " (or / and | for ~=).
import { invalidArgument } from './storage/errors';
import { Info, kindName } from './storage/info';

type Op = 'present' | '==' | '!=' | '~=';
interface Selector {
  path: string[];
  op: Op;
  value: string;
  re?: RegExp;
}
/** OR of ANDs. An empty list matches everything. */
export type Filter = Selector[][];

const isFieldChar = (c: string) => /[A-Za-z0-9_]/.test(c);

class Scanner {
  pos = 0;
  constructor(readonly input: string) {}
  error(msg: string, at = this.pos): never {
    throw invalidArgument(`filters: parse error: [${this.input}] at ${at}: ${msg}`);
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
    return this.error(op ? `unsupported operator "${op}"` : 'expected an operator ("=="|"!="|"~=")', start);
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

function parseOne(input: string): Selector[] {
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
        try {
          sel.re = new RegExp(value);
        } catch (e) {
          s.error(`bad regular expression: ${(e as Error).message}`);
        }
      }
    }
    all.push(sel);
    const sep = s.peek();
    if (sep === '') return all;
    if (sep !== ',') s.error(`unexpected input: ${sep}`);
    s.pos++;
  }
}

/** Parses List's filter strings; an InvalidArgument error names the bad one. */
export function parseFilters(filters: string[]): Filter {
  return filters.filter((f) => f !== '').map(parseOne);
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
