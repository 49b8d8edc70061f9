'use strict';
// The Node.js worker module of the process-pool bench (`node_worker_calls_per_s`), served by
// `workers/node/serve.js`: a synchronous echo, the cheapest call there is.
exports.echo = (x) => x;
