// The generated TypeScript contract (clients/typescript/realtime-events.ts)
// type-checks a sample agent client written against socket.io-client, and
// rejects the mistakes marked @ts-expect-error in it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(path.dirname(createRequire(import.meta.url).resolve("typescript/package.json")), "bin", "tsc");

test("tsc --noEmit type-checks the sample client against the generated contract", { timeout: 120000 }, async () => {
  const { code, output } = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, "--noEmit", "-p", path.join(here, "types", "tsconfig.json")],
      { cwd: here, timeout: 110000 }, (err, stdout, stderr) => resolve({ code: err ? err.code ?? 1 : 0, output: stdout + stderr }));
  });
  assert.equal(code, 0, `tsc failed:\n${output}`);
});
