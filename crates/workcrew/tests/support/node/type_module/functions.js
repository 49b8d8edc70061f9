// ESM in a `.js` file under `"type": "module"`.
export const negate = (x) => -x;
