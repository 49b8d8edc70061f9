'use strict';
/**
 * A workcrew worker in Node.js (18 or newer), no dependencies.
 *
 * Written from `docs/protocol.md` (protocol version 1) alone. `serve.js` is the command a
 * process pool runs (`node serve.js ./my-module.js`); this file is the protocol, usable on its
 * own:
 *
 *     const { serve } = require('./worker.js');
 *     serve({ add: (a, b) => a + b }, { concurrency: 4 });
 *
 * Calling convention (see README.md):
 * - The JSON payload is the argument list: an array is spread into positional arguments
 *   (a Rust tuple `(a, b)` calls `f(a, b)`), any other value is the one argument.
 * - One more argument follows them: the call's context `{ id, name, signal }`, where `signal`
 *   is an `AbortSignal` that fires when the pool sends `CANCEL` for the call.
 * - A function returns a value or a promise of one (sent as JSON; `undefined` as `null`). A
 *   thrown error (or a rejection) is answered `failed` with its `message` and its `data`
 *   property, if any; after the call's `CANCEL` it is answered `cancelled` instead.
 * - A call is answered only once its function has ended. A function that ignores its signal
 *   is left to the pool, which kills the worker after its cancel grace.
 *
 * Exit codes: 0 after `SHUTDOWN` (once every held call is answered) or at end of file on the
 * channel; 76 (EX_PROTOCOL) when the channel breaks (a frame the protocol forbids, a bad
 * `WELCOME`, a read or write error); Node's own 1 for an exception or rejection no call
 * caught. `serve.js` adds 64 (EX_USAGE) and 66 (EX_NOINPUT) for start-up errors.
 *
 * # Implementation notes
 *
 * - Ids are u64 on the wire, beyond JavaScript's exact integers: each is kept as its two
 *   32-bit halves (written back as they came) and, as a map key and `context.id`, as a number
 *   when below 2^53 and a BigInt above.
 * - Frames are parsed a whole read at a time: `PING` is answered and `CANCEL` applied while
 *   parsing; calls are queued and started after, in order, in slices of about 5 ms, so a run
 *   of synchronous calls lets the event loop read (and answer `PING`s) between slices.
 * - Answers are gathered in an outbox and written together once per tick (`process.nextTick`),
 *   so a burst of quick calls costs one write; a `PONG` flushes at once.
 * - A call leaves `calls` before its answer is queued: once the pool has the answer it may
 *   reuse the id, which must then find the old call gone.
 */

const net = require('node:net');
const { pathToFileURL } = require('node:url');
const path = require('node:path');
const fs = require('node:fs');
const { createRequire } = require('node:module');
// `buffer.isUtf8` appeared in Node 18.14; without it names and payloads are not checked.
const { isUtf8 } = require('node:buffer');

const PROTOCOL_VERSION = 1;
const HELLO = 1;
const WELCOME = 2;
const CALL = 3;
const RESULT = 4;
const ERROR = 5;
const CANCEL = 6;
const PING = 7;
const PONG = 8;
const SHUTDOWN = 9;
const CALL_MANY = 10;
const CALL_FDS = 11;
const HEADER_LEN = 13;
const DEFAULT_MAX_FRAME = 16 * 1024 * 1024;
/**
 * The concurrency a worker announces when it is not given one and every function it serves is
 * declared `async`: such calls overlap on the one event loop and cost little to hold, and a deep
 * window lets the pool carry many calls per read and write (as the Rust SDK's default for async
 * functions). A worker with any other function announces 1: synchronous code runs one call at a
 * time on the one thread, so more would only wait inside the worker while another may be free.
 */
const DEFAULT_ASYNC_CONCURRENCY = 1024;
const MIN_MAX_FRAME = 4096;
/** How long calls may run back to back before the event loop gets a turn, in milliseconds. */
const SLICE_MS = 5;

/** Exit codes of a worker. */
const EXIT = Object.freeze({
  /** `SHUTDOWN` handled, or end of file on the channel. */
  OK: 0,
  /** Bad command line or environment, or a module that exports no function (`serve.js`). */
  USAGE: 64,
  /** The module could not be loaded: not found, a syntax error, or it threw (`serve.js`). */
  NO_MODULE: 66,
  /** The channel broke: a frame the protocol forbids, a bad `WELCOME`, an I/O error. */
  PROTOCOL: 76,
});

/** The channel carried something the protocol forbids: the worker exits with `EXIT.PROTOCOL`. */
class ProtocolError extends Error {}

/** The id as a number below 2^53, else as a BigInt. */
function idValue(hi, lo) {
  return hi < 0x200000 ? hi * 0x100000000 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/** One frame: header and a UTF-8 text body (or none). */
function frameOf(type, hi, lo, text) {
  const n = text === undefined ? 0 : Buffer.byteLength(text);
  const frame = Buffer.allocUnsafe(HEADER_LEN + n);
  frame.writeUInt32BE(9 + n, 0);
  frame[4] = type;
  frame.writeUInt32BE(hi, 5);
  frame.writeUInt32BE(lo, 9);
  if (n > 0) frame.write(text, HEADER_LEN, n, 'utf8');
  return frame;
}

function isThenable(v) {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof v.then === 'function';
}

/** The arguments of a call: the payload spread if it is an array, else the one argument. */
function argsOf(payload, context) {
  if (Array.isArray(payload)) {
    payload.push(context);
    return payload;
  }
  return [payload, context];
}

/** One human-readable line. */
function oneLine(text) {
  return String(text).replace(/\s*[\r\n]+\s*/g, ' ');
}

/** The message and data of a thrown value. */
function describeThrown(thrown) {
  let message;
  let data;
  try {
    if (thrown !== null && typeof thrown === 'object') {
      message = typeof thrown.message === 'string' && thrown.message !== '' ? thrown.message : String(thrown.name || thrown);
      data = thrown.data;
    } else {
      message = String(thrown);
    }
  } catch (_) {
    message = 'a value that cannot be shown';
  }
  return { message: oneLine(message), data };
}

function isClass(fn) {
  return /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

/**
 * The functions of `source` by name: a plain object's own enumerable function properties, or
 * a `Map` of name to function. Classes are left out (they cannot be called without `new`).
 * Returns a `Map` of name to `{ fn, owner }` (`owner` is `this` during a call).
 */
function functionTable(source) {
  const table = new Map();
  if (source instanceof Map) {
    for (const [name, fn] of source) {
      if (typeof fn === 'function' && !isClass(fn)) table.set(String(name), { fn, owner: undefined });
    }
    return table;
  }
  if (source !== null && (typeof source === 'object' || typeof source === 'function')) {
    for (const name of Object.keys(source)) {
      const fn = source[name];
      if (typeof fn === 'function' && !isClass(fn)) table.set(name, { fn, owner: source });
    }
  }
  return table;
}

/**
 * The functions a module exports, loaded with `import()` (CommonJS and ESM alike).
 *
 * - Every exported function, by its export name; `this` in a call is the exports object.
 * - A `default` export that is an object (a CommonJS `module.exports = { ... }`, an ESM
 *   `export default { ... }`): its own enumerable functions too, with `this` that object. A
 *   named export of the same name wins.
 * - A `default` export that is a function (`module.exports = fn`): served as `default`, and its
 *   own enumerable function properties by their names.
 *
 * `spec` is a path (relative to `cwd`), a `file:` URL, or a package name resolved from `cwd`.
 * Returns a promise of a `Map` of name to `{ fn, owner }`.
 */
async function loadFunctions(spec, cwd = process.cwd()) {
  const namespace = await import(resolveModule(spec, cwd));
  const table = new Map();
  const fromDefault = namespace.default;
  if (typeof fromDefault === 'function' && !isClass(fromDefault)) {
    table.set('default', { fn: fromDefault, owner: undefined });
  }
  for (const [name, entry] of functionTable(fromDefault)) table.set(name, entry);
  for (const name of Object.keys(namespace)) {
    const fn = namespace[name];
    // Node 23 adds `module.exports` to the namespace of a CommonJS module: it is `default`.
    if (name === 'default' || name === 'module.exports' || typeof fn !== 'function' || isClass(fn)) continue;
    const known = table.get(name);
    // CommonJS exports show up both ways; keep `module.exports` as `this`.
    if (known === undefined || known.fn !== fn) table.set(name, { fn, owner: namespace });
  }
  return table;
}

/** A URL `import()` takes for `spec`. */
function resolveModule(spec, cwd) {
  if (spec.startsWith('file:')) return spec;
  const file = path.resolve(cwd, spec);
  if (path.isAbsolute(spec) || spec.startsWith('.') || fs.existsSync(file)) return pathToFileURL(file).href;
  // A package name: resolved as `require` would from `cwd`; an ESM-only package that
  // `require` cannot resolve is left to `import()`.
  try {
    return pathToFileURL(createRequire(path.join(cwd, 'noop.js')).resolve(spec)).href;
  } catch (_) {
    return spec;
  }
}

/** The context a function gets as its last argument. */
class CallContext {
  constructor(call, id, name) {
    this._call = call;
    /** The call id (a number, or a BigInt above 2^53). */
    this.id = id;
    /** The function's name as the pool called it. */
    this.name = name;
  }

  /** An `AbortSignal` that fires when the pool cancels the call. */
  get signal() {
    return this._call.signal();
  }

  /** Whether the pool cancelled the call. */
  get cancelled() {
    return this._call.cancelled;
  }

  toJSON() {
    return { id: typeof this.id === 'bigint' ? String(this.id) : this.id, name: this.name };
  }
}

/** One call held by the worker, from its frame to its answer. */
class Call {
  constructor(hi, lo, id, name, entry, args, many) {
    this.hi = hi;
    this.lo = lo;
    this.id = id;
    this.entry = entry;
    this.args = args;
    this.many = many;
    this.cancelled = false;
    this.answered = false;
    this.controller = null;
    this.context = new CallContext(this, id, name);
  }

  signal() {
    if (this.controller === null) {
      this.controller = new AbortController();
      if (this.cancelled) this.controller.abort();
    }
    return this.controller.signal;
  }

  cancel() {
    if (this.cancelled) return;
    this.cancelled = true;
    if (this.controller !== null) this.controller.abort();
  }
}

/** The worker's side of one channel. */
class Session {
  constructor(table, concurrency, fd) {
    this.table = table;
    this.concurrency = concurrency;
    this.maxFrame = DEFAULT_MAX_FRAME;
    this.welcomed = false;
    this.shuttingDown = false;
    /** No more frames are read: the process is about to exit. */
    this.exiting = false;
    /** Exiting after SHUTDOWN: the last answers are being written. */
    this.finishing = false;
    /** Calls held: queued or running, by id. */
    this.calls = new Map();
    /** Calls received but not started yet, in order (`readyHead` is the next). */
    this.ready = [];
    this.readyHead = 0;
    this.pumpScheduled = false;
    this.outbox = [];
    this.flushScheduled = false;
    /** The start of a frame not yet complete: chunks, their length, the bytes needed. */
    this.partial = null;
    this.partialLen = 0;
    this.need = 0;
    this.pumpBound = () => this.pump();
    this.flushBound = () => this.flush();
    this.socket = new net.Socket({ fd, readable: true, writable: true });
    this.socket.on('data', (chunk) => this.guard(() => this.onData(chunk)));
    this.socket.on('end', () => this.onEnd());
    this.socket.on('error', (err) => {
      // After SHUTDOWN the answers are out: a pool that closed first changes nothing.
      if (this.finishing) process.exit(EXIT.OK);
      this.die(`channel error: ${err.message}`);
    });
  }

  start() {
    const names = [...this.table.keys()].sort();
    this.send(
      frameOf(
        HELLO,
        0,
        0,
        JSON.stringify({
          protocol: PROTOCOL_VERSION,
          functions: names,
          concurrency: this.concurrency,
          encodings: ['json'],
          pid: process.pid,
          batch: true,
          fds: false,
        }),
      ),
    );
    this.flush();
  }

  guard(step) {
    if (this.exiting) return;
    try {
      step();
    } catch (err) {
      if (err instanceof ProtocolError) this.die(`protocol error: ${err.message}`);
      else throw err;
    }
  }

  /** Ends the process at once: the channel is broken. */
  die(why) {
    if (this.exiting) return;
    this.exiting = true;
    process.stderr.write(`workcrew worker ${process.pid}: ${why}\n`);
    process.exit(EXIT.PROTOCOL);
  }

  onEnd() {
    if (this.exiting) return;
    if (this.partial !== null) return this.die('the channel closed inside a frame');
    // The pool is gone: nobody can take the answers of calls still held.
    this.exiting = true;
    process.exit(EXIT.OK);
  }

  onData(data) {
    let chunk = data;
    if (this.partial !== null) {
      this.partial.push(chunk);
      this.partialLen += chunk.length;
      if (this.partialLen < this.need) return;
      chunk = Buffer.concat(this.partial, this.partialLen);
      this.partial = null;
    }
    const end = chunk.length;
    let off = 0;
    this.need = 4;
    while (end - off >= 4 && !this.exiting) {
      const length = chunk.readUInt32BE(off);
      // Checked before the body arrives: a length out of bounds breaks the channel at once.
      if (length > this.maxFrame) {
        throw new ProtocolError(`a frame of ${length} bytes exceeds the maximum frame size of ${this.maxFrame} bytes`);
      }
      if (length < 9) throw new ProtocolError(`a frame length of ${length} is below 9`);
      if (end - off < 4 + length) {
        this.need = 4 + length;
        break;
      }
      this.onFrame(chunk[off + 4], chunk.readUInt32BE(off + 5), chunk.readUInt32BE(off + 9), chunk, off + HEADER_LEN, off + 4 + length);
      off += 4 + length;
    }
    if (off < end && !this.exiting) {
      this.partial = [chunk.subarray(off)];
      this.partialLen = end - off;
    }
    this.pump();
  }

  onFrame(type, hi, lo, buf, start, end) {
    if (!this.welcomed) {
      if (type !== WELCOME) throw new ProtocolError(`expected WELCOME, got a frame of type ${type}`);
      this.onWelcome(buf.toString('utf8', start, end));
      return;
    }
    switch (type) {
      case CALL:
      case CALL_MANY:
        this.onCall(type === CALL_MANY, hi, lo, buf, start, end);
        return;
      case CANCEL: {
        // A CANCEL for an id not in flight is ignored (section 3.6).
        const call = this.calls.get(idValue(hi, lo));
        if (call !== undefined) call.cancel();
        return;
      }
      case PING:
        this.send(frameOf(PONG, hi, lo));
        this.flush();
        return;
      case SHUTDOWN:
        this.shuttingDown = true;
        this.exitIfDone();
        return;
      case CALL_FDS:
        throw new ProtocolError('CALL_FDS sent to a worker that announced fds: false');
      case WELCOME:
        throw new ProtocolError('a second WELCOME');
      default:
        throw new ProtocolError(`a frame of type ${type}, which the pool does not send`);
    }
  }

  onWelcome(text) {
    let welcome;
    try {
      welcome = JSON.parse(text);
    } catch (err) {
      throw new ProtocolError(`WELCOME is not JSON: ${err.message}`);
    }
    if (welcome === null || typeof welcome !== 'object') throw new ProtocolError('WELCOME is not a JSON object');
    if (welcome.protocol !== PROTOCOL_VERSION) {
      throw new ProtocolError(`WELCOME speaks protocol ${JSON.stringify(welcome.protocol)}; this worker speaks ${PROTOCOL_VERSION}`);
    }
    if (welcome.encoding !== 'json') {
      throw new ProtocolError(`WELCOME chose encoding ${JSON.stringify(welcome.encoding)}; this worker offered only "json"`);
    }
    const maxFrame = welcome.max_frame === undefined ? DEFAULT_MAX_FRAME : welcome.max_frame;
    if (!Number.isSafeInteger(maxFrame) || maxFrame < MIN_MAX_FRAME) {
      throw new ProtocolError(`WELCOME announces a maximum frame size of ${JSON.stringify(maxFrame)}, below ${MIN_MAX_FRAME}`);
    }
    this.maxFrame = Math.min(maxFrame, 0xffffffff);
    this.welcomed = true;
  }

  onCall(many, hi, lo, buf, start, end) {
    const id = idValue(hi, lo);
    if (end - start < 2) throw new ProtocolError(`call ${id} has a body of ${end - start} bytes`);
    const nameEnd = start + 2 + buf.readUInt16BE(start);
    if (nameEnd > end) throw new ProtocolError(`call ${id} has a body shorter than its function name`);
    if (this.calls.has(id)) throw new ProtocolError(`call ${id} is already in flight`);
    const name = buf.toString('utf8', start + 2, nameEnd);
    const entry = this.table.get(name);
    if (entry === undefined || name.includes('\uFFFD')) {
      if (isUtf8 !== undefined && !isUtf8(buf.subarray(start + 2, nameEnd))) {
        throw new ProtocolError(`call ${id} names a function in bytes that are not UTF-8`);
      }
      if (entry === undefined) {
        this.sendError(hi, lo, 'unknown_function', `no function named ${JSON.stringify(name)}`);
        return;
      }
    }
    let args;
    try {
      if (isUtf8 !== undefined && !isUtf8(buf.subarray(nameEnd, end))) throw new Error('the payload is not UTF-8');
      args = JSON.parse(buf.toString('utf8', nameEnd, end));
    } catch (err) {
      this.sendError(hi, lo, 'bad_args', `arguments of ${name} are not JSON: ${err.message}`);
      return;
    }
    if (many && !Array.isArray(args)) {
      this.sendError(hi, lo, 'bad_args', 'a CALL_MANY payload must be a JSON array');
      return;
    }
    const call = new Call(hi, lo, id, name, entry, args, many);
    this.calls.set(id, call);
    this.ready.push(call);
  }

  /** Starts queued calls, in order, for one slice; the rest after the event loop's next turn. */
  pump() {
    this.pumpScheduled = false;
    const started = performance.now();
    while (this.readyHead < this.ready.length && !this.exiting) {
      const call = this.ready[this.readyHead];
      this.ready[this.readyHead++] = undefined;
      this.run(call);
      if (this.readyHead < this.ready.length && performance.now() - started > SLICE_MS) {
        if (!this.pumpScheduled) {
          this.pumpScheduled = true;
          setImmediate(this.pumpBound);
        }
        return;
      }
    }
    this.ready.length = 0;
    this.readyHead = 0;
  }

  run(call) {
    // Cancelled before it started: it has ended without running.
    if (call.cancelled) return this.answerCancelled(call);
    if (call.many) return this.runMany(call);
    let value;
    try {
      value = call.entry.fn.apply(call.entry.owner, argsOf(call.args, call.context));
    } catch (err) {
      return this.answerThrown(call, err, undefined);
    }
    if (isThenable(value)) {
      Promise.resolve(value).then(
        (v) => this.answerValue(call, v),
        (err) => this.answerThrown(call, err, undefined),
      );
    } else {
      this.answerValue(call, value);
    }
  }

  /** A `CALL_MANY` chunk: the function on each item in order, one answer (section 3.9). */
  runMany(call) {
    const items = call.args;
    const results = new Array(items.length);
    const { fn, owner } = call.entry;
    let next = 0;
    const step = () => {
      const started = performance.now();
      while (next < items.length) {
        if (call.cancelled) return this.answerCancelled(call);
        const index = next;
        let value;
        try {
          value = fn.apply(owner, argsOf(items[index], call.context));
        } catch (err) {
          return this.answerThrown(call, err, index);
        }
        if (isThenable(value)) {
          Promise.resolve(value).then(
            (v) => {
              results[index] = v;
              next = index + 1;
              step();
            },
            (err) => this.answerThrown(call, err, index),
          );
          return undefined;
        }
        results[index] = value;
        next = index + 1;
        if (next < items.length && performance.now() - started > SLICE_MS) {
          setImmediate(step);
          return undefined;
        }
      }
      return this.answerValue(call, results);
    };
    step();
  }

  /** Forgets the call; false if it was answered already. */
  settle(call) {
    if (call.answered) return false;
    call.answered = true;
    this.calls.delete(call.id);
    return true;
  }

  answerValue(call, value) {
    if (!this.settle(call)) return;
    let text;
    try {
      text = JSON.stringify(value);
    } catch (err) {
      this.sendError(call.hi, call.lo, 'internal', `the result of call ${call.id} is not JSON: ${oneLine(err.message)}`);
      return this.exitIfDone();
    }
    if (text === undefined) text = 'null';
    const size = Buffer.byteLength(text);
    if (9 + size > this.maxFrame) {
      this.sendError(call.hi, call.lo, 'too_large', `the result of call ${call.id} takes ${size} bytes, above the maximum frame size of ${this.maxFrame} bytes`);
    } else {
      this.send(frameOf(RESULT, call.hi, call.lo, text));
    }
    return this.exitIfDone();
  }

  /** A thrown error or rejection; `index` is the item of a chunk, else undefined. */
  answerThrown(call, thrown, index) {
    if (call.cancelled) return this.answerCancelled(call);
    if (!this.settle(call)) return undefined;
    const { message, data } = describeThrown(thrown);
    const detail = index === undefined ? data : { index, data: data === undefined ? null : data };
    this.sendError(call.hi, call.lo, 'failed', message, detail);
    return this.exitIfDone();
  }

  answerCancelled(call) {
    if (!this.settle(call)) return undefined;
    this.sendError(call.hi, call.lo, 'cancelled', `call ${call.id} was cancelled`);
    return this.exitIfDone();
  }

  /** Sends an `ERROR`; details that are not JSON or do not fit in a frame are left out. */
  sendError(hi, lo, kind, message, data) {
    let text;
    try {
      text = JSON.stringify({ kind, message, data });
    } catch (_) {
      text = undefined;
    }
    if (text === undefined || 9 + Buffer.byteLength(text) > this.maxFrame) {
      text = JSON.stringify({ kind, message: message.length > 1000 ? `${message.slice(0, 1000)}...` : message });
    }
    this.send(frameOf(ERROR, hi, lo, text));
  }

  send(frame) {
    this.outbox.push(frame);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      process.nextTick(this.flushBound);
    }
  }

  flush() {
    this.flushScheduled = false;
    const { outbox } = this;
    if (outbox.length === 0 || this.socket.destroyed) return;
    this.outbox = [];
    this.socket.write(outbox.length === 1 ? outbox[0] : Buffer.concat(outbox));
  }

  /** After `SHUTDOWN`, exits with status 0 once every held call is answered (section 3.8). */
  exitIfDone() {
    if (!this.shuttingDown || this.calls.size > 0 || this.exiting) return;
    this.exiting = true;
    this.finishing = true;
    this.flush();
    this.socket.end(() => process.exit(EXIT.OK));
  }
}

/** Whether `fn` is declared `async` (an async function or async arrow function). */
function isAsyncFunction(fn) {
  return Object.prototype.toString.call(fn) === '[object AsyncFunction]';
}

/**
 * The concurrency announced by default for the functions of `table` (a `Map` of name to
 * `{ fn, owner }`): `DEFAULT_ASYNC_CONCURRENCY` when every one is declared `async`, else 1. A
 * plain function that returns a promise counts as synchronous: it cannot be told apart before
 * it is called; give such a worker its concurrency.
 */
function defaultConcurrency(table) {
  const entries = [...table.values()];
  return entries.length > 0 && entries.every((e) => isAsyncFunction(e.fn)) ? DEFAULT_ASYNC_CONCURRENCY : 1;
}

/**
 * Serves `functions` over the channel on `fd` (default 0) until `SHUTDOWN` or end of file, then
 * exits the process (the exit codes are in `EXIT`).
 *
 * `functions` is an object whose own enumerable functions are served by name (`this` is the
 * object), or a `Map` of name to function, or the `Map` `loadFunctions` returns.
 * `options.concurrency` is announced in `HELLO`: the pool never has more calls than this
 * unanswered on the worker. Default: `DEFAULT_ASYNC_CONCURRENCY` (1024) when every function is
 * declared `async`, else 1 (see `defaultConcurrency`).
 */
function serve(functions, options = {}) {
  let table = functions;
  const loaded = table instanceof Map && [...table.values()].every((e) => e !== null && typeof e === 'object' && typeof e.fn === 'function');
  if (!loaded) table = functionTable(functions);
  const concurrency = options.concurrency === undefined ? defaultConcurrency(table) : options.concurrency;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new RangeError(`concurrency must be a whole number of at least 1, not ${concurrency}`);
  }
  const session = new Session(table, concurrency, options.fd === undefined ? 0 : options.fd);
  session.start();
}

module.exports = { serve, loadFunctions, defaultConcurrency, EXIT, PROTOCOL_VERSION, DEFAULT_MAX_FRAME, MIN_MAX_FRAME, DEFAULT_ASYNC_CONCURRENCY };
