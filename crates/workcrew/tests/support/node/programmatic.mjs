// A worker program of its own: imports `serve` from workers/node/worker.js (a CommonJS module)
// in ESM and serves an object of functions, with a concurrency given in code.
import { serve } from '../../../../../workers/node/worker.js';

serve({ concat: (a, b) => `${a}${b}` }, { concurrency: 3 });
