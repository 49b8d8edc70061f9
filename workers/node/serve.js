#!/usr/bin/env node
'use strict';
/**
 * Serves the exported functions of a module to a workcrew process pool:
 *
 *     node serve.js [--concurrency N] [--] <module> [module arguments...]
 *
 * `<module>` is a path (CommonJS or ESM, relative to the working directory) or a package
 * name. `--concurrency N` (or the environment variable `WORKCREW_NODE_CONCURRENCY`; the flag
 * wins) is how many calls the worker holds at once; default 1024 when every exported function
 * is declared `async`, else 1. See README.md.
 *
 * Exit codes: 64 for a bad command line or a module that exports no function, 66 when the
 * module cannot be loaded; then those of `worker.js` (0 after `SHUTDOWN` or at end of file,
 * 76 when the channel breaks, 1 for an error no call caught).
 */

const { serve, loadFunctions, EXIT } = require('./worker.js');

const USAGE = 'usage: node serve.js [--concurrency N] [--] <module> [module arguments...]';

/** `{ concurrency, module }` from the command line and environment; throws a usage message. */
function parseCommandLine(argv, env) {
  let concurrency = env.WORKCREW_NODE_CONCURRENCY;
  let from = 'WORKCREW_NODE_CONCURRENCY';
  let i = 0;
  for (; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--') {
      i += 1;
      break;
    } else if (arg === '--concurrency' || arg === '-c') {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a number`);
      i += 1;
      concurrency = argv[i];
      from = arg;
    } else if (arg.startsWith('--concurrency=')) {
      concurrency = arg.slice('--concurrency='.length);
      from = '--concurrency';
    } else if (arg === '--help' || arg === '-h') {
      throw new Error('');
    } else if (arg.startsWith('-')) {
      throw new Error(`unknown option ${arg}`);
    } else {
      break;
    }
  }
  if (i >= argv.length) throw new Error('no module given');
  // Unset: `serve` picks the default from the functions.
  let n;
  if (concurrency !== undefined && concurrency !== '') {
    n = /^[0-9]+$/.test(concurrency) ? Number(concurrency) : NaN;
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${from} must be a whole number of at least 1, not ${JSON.stringify(concurrency)}`);
  }
  return { concurrency: n, module: argv[i] };
}

async function main() {
  let options;
  try {
    options = parseCommandLine(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(err.message ? `serve.js: ${err.message}\n${USAGE}\n` : `${USAGE}\n`);
    process.exit(err.message ? EXIT.USAGE : EXIT.OK);
  }
  let functions;
  try {
    functions = await loadFunctions(options.module);
  } catch (err) {
    process.stderr.write(`serve.js: cannot load module ${options.module}: ${err && err.stack ? err.stack : err}\n`);
    process.exit(EXIT.NO_MODULE);
  }
  if (functions.size === 0) {
    process.stderr.write(`serve.js: module ${options.module} exports no function\n`);
    process.exit(EXIT.USAGE);
  }
  serve(functions, { concurrency: options.concurrency });
}

main();
