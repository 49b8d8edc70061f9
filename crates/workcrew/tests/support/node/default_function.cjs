// CommonJS `module.exports = fn`: served as `default`, with its function properties.
module.exports = (x) => x + 1;
module.exports.twice = (x) => 2 * x;
