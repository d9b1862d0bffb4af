// The checked-in types are what openapi-typescript makes of the running API's document: the
// client cannot drift from the API.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { TYPES_FILE, fetchSpec, generateTypes } from "../scripts/types.js";
import { apiUrl } from "./helpers.js";

test("src/openapi.ts matches the running API's OpenAPI document", async () => {
  const fresh = await generateTypes(await fetchSpec(`${apiUrl()}/api/openapi.json`));
  const checkedIn = readFileSync(TYPES_FILE, "utf8");
  if (fresh !== checkedIn) {
    const ours = checkedIn.split("\n");
    const line = fresh.split("\n").findIndex((text, i) => text !== ours[i]);
    assert.fail(`src/openapi.ts is stale from line ${line + 1} (API: ${JSON.stringify(
      fresh.split("\n")[line])}); regenerate it: make run, then npm run types`);
  }
});
