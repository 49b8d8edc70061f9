'use strict';
// A module whose every function is declared `async`, for the worker's default concurrency
// (`tests/node_worker.rs`, `tests/node_worker_protocol.rs`): such a worker announces 1024.

let running = 0;
let peak = 0;

/** Waits `ms`, counting how many calls run at once (`state().peak`). */
exports.inflight = async (ms) => {
  running += 1;
  peak = Math.max(peak, running);
  try {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return ms;
  } finally {
    running -= 1;
  }
};

exports.state = async () => ({ running, peak });
