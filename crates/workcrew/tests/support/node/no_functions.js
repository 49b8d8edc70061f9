// Exports no function: serve.js refuses it (exit code 64).
module.exports = { answer: 42 };
