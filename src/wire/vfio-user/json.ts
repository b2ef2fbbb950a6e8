/**
 * A strict JSON (RFC 8259) reader and writer for the VERSION capabilities.
 *
 * Why not JSON.parse: `pgsizes` is a u64 bitmap and may exceed 2^53 (a kernel-style
 * 0xfffffffffffff000 would silently lose bits as a double), duplicate keys must be refused rather
 * than last-wins, and a key named `__proto__` must stay data. Integers beyond the safe range come
 * back as `bigint`; every other number as `number`. Object key order is kept (except that, as in
 * any JS object, integer-like keys come first), so a document re-serializes to the same text.
 *
 * `writeJson` produces the layout of QEMU's JSON writer (qobject/json-writer.c, not pretty):
 * `{"a": 1, "b": [1, 2]}` — ": " after a key, ", " between members.
 */
import { VFIO_USER_MAX_JSON_DEPTH } from '../../abi/vfio-user.js';
import { encodeFail, malformed } from './bytes.js';

export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | JsonObject;
export interface JsonObject {
  [key: string]: JsonValue;
}

const WHAT = 'VERSION JSON';

export function isJsonObject(v: JsonValue | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sets a member as an own data property, even for `__proto__`. */
export function setMember(obj: JsonObject, key: string, value: JsonValue): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const INTEGER_RE = /^-?(?:0|[1-9][0-9]*)$/;

class Reader {
  pos = 0;
  constructor(readonly text: string) {}

  fail(detail: string): never {
    throw malformed(WHAT, `${detail} at offset ${this.pos}`);
  }

  ws(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.pos++;
      else break;
    }
  }

  value(depth: number): JsonValue {
    this.ws();
    const c = this.text[this.pos];
    switch (c) {
      case '{':
        return this.object(depth);
      case '[':
        return this.array(depth);
      case '"':
        return this.string();
      case 't':
        return this.literal('true', true);
      case 'f':
        return this.literal('false', false);
      case 'n':
        return this.literal('null', null);
      case undefined:
        return this.fail('unexpected end of text');
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.number();
        return this.fail(`unexpected character ${JSON.stringify(c)}`);
    }
  }

  literal<T extends JsonValue>(word: string, v: T): T {
    if (!this.text.startsWith(word, this.pos)) this.fail(`expected ${word}`);
    this.pos += word.length;
    return v;
  }

  number(): number | bigint {
    NUMBER_RE.lastIndex = this.pos;
    const m = NUMBER_RE.exec(this.text);
    if (m === null) return this.fail('malformed number');
    const s = m[0];
    this.pos += s.length;
    if (INTEGER_RE.test(s)) {
      const n = Number(s);
      return Number.isSafeInteger(n) ? n : BigInt(s);
    }
    const n = Number(s);
    if (!Number.isFinite(n)) this.fail(`number ${s} out of range`);
    return n;
  }

  string(): string {
    const t = this.text;
    this.pos++; // opening quote
    let out = '';
    let run = this.pos;
    for (;;) {
      if (this.pos >= t.length) this.fail('unterminated string');
      const c = t.charCodeAt(this.pos);
      if (c === 0x22) {
        out += t.slice(run, this.pos);
        this.pos++;
        return out;
      }
      if (c < 0x20) this.fail('control character in string');
      if (c !== 0x5c) {
        this.pos++;
        continue;
      }
      out += t.slice(run, this.pos);
      const e = t[this.pos + 1];
      this.pos += 2;
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          const hex = t.slice(this.pos, this.pos + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) this.fail('bad \\u escape');
          out += String.fromCharCode(Number.parseInt(hex, 16));
          this.pos += 4;
          break;
        }
        default:
          this.pos -= 2;
          this.fail('bad escape');
      }
      run = this.pos;
    }
  }

  /** `depth` counts the containers around this one; at most VFIO_USER_MAX_JSON_DEPTH nest. */
  enter(depth: number): void {
    if (depth >= VFIO_USER_MAX_JSON_DEPTH) this.fail(`nesting deeper than ${VFIO_USER_MAX_JSON_DEPTH}`);
    this.pos++;
  }

  array(depth: number): JsonValue[] {
    this.enter(depth);
    const out: JsonValue[] = [];
    this.ws();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.text[this.pos];
      this.pos++;
      if (c === ']') return out;
      if (c !== ',') {
        this.pos--;
        this.fail("expected ',' or ']'");
      }
    }
  }

  object(depth: number): JsonObject {
    this.enter(depth);
    const out: JsonObject = {};
    this.ws();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.text[this.pos] !== '"') this.fail('expected a member name');
      const key = this.string();
      if (Object.hasOwn(out, key)) this.fail(`duplicate member ${JSON.stringify(key)}`);
      this.ws();
      if (this.text[this.pos] !== ':') this.fail("expected ':'");
      this.pos++;
      setMember(out, key, this.value(depth + 1));
      this.ws();
      const c = this.text[this.pos];
      this.pos++;
      if (c === '}') return out;
      if (c !== ',') {
        this.pos--;
        this.fail("expected ',' or '}'");
      }
    }
  }
}

/**
 * Parses one JSON text (surrounding whitespace allowed).
 * @throws MalformedError(EINVAL) for anything RFC 8259 does not allow, duplicate member names, or
 * nesting deeper than VFIO_USER_MAX_JSON_DEPTH.
 */
export function parseJson(text: string): JsonValue {
  const r = new Reader(text);
  const v = r.value(0);
  r.ws();
  if (r.pos !== text.length) r.fail('trailing characters');
  return v;
}

/** Serializes in QEMU's compact layout. @throws VfioError(EINVAL) for a non-finite number. */
export function writeJson(v: JsonValue): string {
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return v.toString();
    case 'number':
      if (!Number.isFinite(v)) encodeFail(WHAT, `number ${v} has no JSON form`);
      return Number.isInteger(v) ? v.toFixed(0) : JSON.stringify(v);
    case 'string':
      return JSON.stringify(v);
    default:
      if (v === null) return 'null';
      if (Array.isArray(v)) return `[${v.map(writeJson).join(', ')}]`;
      return `{${Object.keys(v)
        .map((k) => `${JSON.stringify(k)}: ${writeJson(v[k] as JsonValue)}`)
        .join(', ')}}`;
  }
}
