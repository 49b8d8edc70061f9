'use strict';
// The CommonJS module `tests/node_worker.rs` serves with `workers/node/serve.js`: one function
// per behaviour or fault of the process pool's matrix. It keeps counters that `state` returns,
// so a test can see what ran in the worker, what is still running, and what saw its cancel.
//
// Environment, read while loading (the start-up faults):
//   NODE_TEST_MODE  exit_before_hello: exit with code 3 before the handshake
//                   throw_on_load: throw while loading (serve.js exits with 66)
//                   never_ready: block for 60 s before the handshake (the ready timeout fires)

const fs = require('node:fs');

switch (process.env.NODE_TEST_MODE) {
  case 'exit_before_hello':
    process.exit(3);
    break;
  case 'throw_on_load':
    throw new Error('this module is broken');
  case 'never_ready':
    // Sleeps without spinning; bounded, so a test that fails leaves nothing running for long.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
    break;
  default:
}

/** Calls inside `wait`, `ignore` and `inflight` now, and the most at once. */
let running = 0;
let peak = 0;
/** Ids of calls whose signal fired, in order. */
const aborted = [];
/** Ids `recordId` saw. */
const ids = new Set();

function enter() {
  running += 1;
  peak = Math.max(peak, running);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A busy loop of `ms` milliseconds of wall-clock time: blocks the event loop. */
function spin(ms) {
  const end = Date.now() + ms;
  let x = 0;
  while (Date.now() < end) x = (x * 31 + 7) % 1000003;
  return x;
}

exports.echo = (x) => x;
exports.add = (a, b) => a + b;
exports.pid = () => process.pid;

/** Async: resolves with a greeting after a timer. */
exports.greet = async (name) => {
  await sleep(1);
  return `hello ${name}`;
};

/** Throws an Error with the given message and a `data` property. */
exports.fail = (message) => {
  const err = new Error(message);
  err.data = { reason: message };
  throw err;
};

/** Rejects with an Error without data. */
exports.failAsync = async (message) => {
  await sleep(1);
  throw new TypeError(message);
};

/** Throws a value that is not an Error. */
exports.throwString = () => {
  // eslint-disable-next-line no-throw-literal
  throw 'a plain string';
};

/** A result that is not JSON (a BigInt). */
exports.bigint = () => 2n ** 70n;

/** A string of `n` bytes: above a small maximum frame size it is too large. */
exports.repeat = (n) => 'x'.repeat(n);

/** Fails on a negative number; the square otherwise. */
exports.square = (x) => {
  if (x < 0) throw new Error(`negative: ${x}`);
  return x * x;
};

/** Records the call id it ran under (one per CALL, one per CALL_MANY chunk). */
exports.recordId = (x, context) => {
  ids.add(context.id);
  return x;
};

/** Waits `ms` milliseconds, or until its signal fires (then rejects with the abort reason). */
exports.wait = (ms, { id, signal }) => {
  enter();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      running -= 1;
      resolve('waited');
    }, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      aborted.push(id);
      running -= 1;
      reject(signal.reason);
    });
  });
};

/** Never settles and ignores its signal: only a kill ends it. */
exports.ignore = () => {
  enter();
  return new Promise(() => {});
};

/** Waits `ms`, counting how many calls run at once (`state().peak`). */
exports.inflight = async (ms) => {
  enter();
  await sleep(ms);
  running -= 1;
  return process.pid;
};

/** Synchronous: blocks the event loop for `ms` milliseconds. */
exports.busy = (ms) => spin(ms);

/** Synchronous and long (60 s): no PING is answered meanwhile. */
exports.freeze = () => spin(60000);

/** `n` lines on stdout and on stderr, then `n`. */
exports.spam = (n) => {
  for (let i = 0; i < n; i += 1) {
    console.log(`noise on stdout ${i}`);
    console.error(`noise on stderr ${i}`);
  }
  return n;
};

/** Writes bytes that are no frame to the channel (fd 0), then waits. */
exports.garbage = () => {
  fs.writeSync(0, Buffer.from([0, 0, 0, 12, 99, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
  return new Promise(() => {});
};

exports.crash = (code) => process.exit(code);

/** Throws from a timer, outside any call: Node ends the process (exit code 1). */
exports.throwLater = () => {
  setTimeout(() => {
    throw new Error('thrown outside any call');
  }, 1);
  return new Promise(() => {});
};

/** Leaves a rejection nobody handles: Node ends the process (exit code 1). */
exports.rejectLater = () => {
  Promise.reject(new Error('nobody handles this'));
  return new Promise(() => {});
};
exports.abort = () => process.abort();

/** What ran in this worker: calls running now, the most at once, aborted ids, recorded ids. */
exports.state = () => ({ running, peak, aborted, ids: ids.size });
