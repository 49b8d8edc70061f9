// An ESM module for `tests/node_worker.rs`: named exports (sync and async) and a default
// export that is an object of functions, whose methods see it as `this`.

export function triple(x) {
  return 3 * x;
}

export const later = async (x, { signal }) => {
  await new Promise((resolve) => setTimeout(resolve, 1));
  return { x, aborted: signal.aborted };
};

export default {
  shout(text) {
    return text.toUpperCase() + this.mark();
  },
  mark() {
    return '!';
  },
};
