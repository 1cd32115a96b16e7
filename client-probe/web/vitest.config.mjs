// Units only (test/); the browser tests are e2e/ (node --test, real Chromium).
export default { test: { include: ["test/**/*.test.ts"], environment: "node", testTimeout: 20000 } };
