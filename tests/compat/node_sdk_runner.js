// Every method of the official Node SDK (airalo-sdk), each outcome checked.
//
// Usage: node node_sdk_runner.js EXPECTED_JSON
// The SDK is found through NODE_PATH; its only change is its base-URL constant, set here at run
// time to EXPECTED.base_url (the SDK speaks https only: NODE_EXTRA_CA_CERTS trusts the emulator).
// Prints one JSON object {method: "ok" | "FAIL: why"} on the last line.
"use strict";

const expected = JSON.parse(process.argv[2]);
const API_CONSTANTS = require("airalo-sdk/src/constants/ApiConstants");
API_CONSTANTS.BASE_URL.production = expected.base_url;
const { Airalo } = require("airalo-sdk");

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function flatItems(result) {
  check(result && Array.isArray(result.data) && result.data.length > 0, "no packages");
  for (const item of result.data) {
    check(item.package_id && item.slug, `incomplete package ${JSON.stringify(item)}`);
    check(
      Array.isArray(item.countries) && item.countries.length > 0 &&
        item.countries.every((c) => typeof c === "string" && c),
      `no countries in ${JSON.stringify(item)}`,
    );
  }
  return result.data;
}

const sameSet = (a, b) => a.size === b.size && [...a].every((x) => b.has(x));

async function main() {
  const outcomes = {};
  const state = {};
  const attempt = async (name, call) => {
    try {
      await call();
      outcomes[name] = "ok";
    } catch (error) {
      outcomes[name] = `FAIL: ${String(error && error.message ? error.message : error).slice(0, 400)}`;
    }
  };

  const sdk = new Airalo({
    client_id: expected.client_id,
    client_secret: expected.client_secret,
  });
  await attempt("initialize", async () => {
    await sdk.initialize();
    check(typeof sdk.token === "string" && sdk.token.length > 20, "no token");
  });
  if (outcomes.initialize !== "ok") {
    console.log(JSON.stringify(outcomes));
    return;
  }
  const statuses = expected.statuses;
  const iccids = Object.keys(statuses);
  const active = iccids.find((i) => statuses[i] === "ACTIVE");
  const local = new Set(expected.local_countries);
  const cloud = {
    to_email: "ops@example.com",
    sharing_option: ["link", "pdf"],
    copy_address: ["cc@example.com"],
  };
  const pkg = expected.package_id;
  const other = expected.other_package_id;

  const calls = [
    ["getAllPackages", async () => {
      const nested = await sdk.getAllPackages();
      const types = new Set();
      for (const e of nested.data) for (const op of e.operators) for (const p of op.packages) types.add(p.type);
      check(sameSet(types, new Set(["sim", "topup"])), `types ${[...types]}`);
      const codes = new Set(flatItems(await sdk.getAllPackages(true)).flatMap((i) => i.countries));
      check([...local].every((c) => codes.has(c)), `countries ${[...codes]}`);
    }],
    ["getSimPackages", async () => {
      const items = flatItems(await sdk.getSimPackages(true));
      check(items.every((i) => i.type === "sim"), "top-ups among sim packages");
    }],
    ["getLocalPackages", async () => {
      const items = flatItems(await sdk.getLocalPackages(true));
      check(items.every((i) => i.countries.length === 1), "a local package in many countries");
      check(sameSet(new Set(items.map((i) => i.countries[0])), local), "local countries");
    }],
    ["getGlobalPackages", async () => {
      const items = flatItems(await sdk.getGlobalPackages(true));
      check(sameSet(new Set(items.map((i) => i.slug)), new Set(expected.global_slugs)), "slugs");
      check(items.every((i) => i.countries.length > 1), "a global package in one country");
    }],
    ["getCountryPackages", async () => {
      const items = flatItems(await sdk.getCountryPackages("us", true));
      check(items.every((i) => i.countries.join() === "US"), "non-US package for US");
    }],
    ["order", async () => {
      const data = (await sdk.order(pkg, 2, "compat order")).data;
      check(data.package_id === pkg && data.quantity === 2, JSON.stringify(data));
      check(data.sims.length === 2 && data.sims.every((s) => s.iccid), "sims");
    }],
    ["orderWithEmailSimShare", async () => {
      const data = (await sdk.orderWithEmailSimShare(pkg, 1, cloud)).data;
      check(data.quantity === 1 && data.sims.length === 1, JSON.stringify(data));
    }],
    ["orderAsync", async () => {
      const data = (await sdk.orderAsync(pkg, 1, expected.webhook_url)).data;
      check(data.request_id.length === 25 && data.accepted_at, JSON.stringify(data));
    }],
    ["orderBulk", async () => {
      const result = await sdk.orderBulk({ [pkg]: 1, [other]: 2 });
      check(sameSet(new Set(Object.keys(result)), new Set([pkg, other])), JSON.stringify(result));
      check(result[other].data.quantity === 2, JSON.stringify(result));
    }],
    ["orderBulkWithEmailSimShare", async () => {
      const result = await sdk.orderBulkWithEmailSimShare({ [pkg]: 1 }, cloud);
      check(result[pkg].data.sims.length === 1, JSON.stringify(result));
    }],
    ["orderAsyncBulk", async () => {
      const result = await sdk.orderAsyncBulk({ [pkg]: 1, [other]: 1 }, expected.webhook_url);
      check(Object.values(result).every((r) => r.data.request_id.length === 25), JSON.stringify(result));
    }],
    ["topup", async () => {
      const data = (await sdk.topup(expected.topup_package_id, expected.topup_iccid)).data;
      check(data.package_id === expected.topup_package_id && data.type === "topup", JSON.stringify(data));
    }],
    ["getSimUsage", async () => {
      const data = (await sdk.getSimUsage(active)).data;
      check(data.status === "ACTIVE" && Number.isInteger(data.remaining), JSON.stringify(data));
    }],
    ["getSimUsageBulk", async () => {
      const result = await sdk.getSimUsageBulk(iccids);
      for (const i of iccids) check(result[i].status === statuses[i], JSON.stringify(result));
    }],
    ["getSimTopups", async () => {
      const data = (await sdk.getSimTopups(expected.topup_iccid)).data;
      check(data.some((p) => p.id === expected.topup_package_id), JSON.stringify(data));
      check(data.every((p) => p.type === "topup"), JSON.stringify(data));
    }],
    ["getSimPackageHistory", async () => {
      const data = (await sdk.getSimPackageHistory(expected.topup_iccid)).data;
      check(data.length >= 1 && data[0].package.id, JSON.stringify(data));
    }],
    ["voucher", async () => {
      const data = (await sdk.voucher(5, 10, 1, true)).data;
      check(data.amount === 10 && data.code && data.is_paid === true, JSON.stringify(data));
    }],
    ["esimVouchers", async () => {
      const data = (await sdk.esimVouchers({ vouchers: [{ package_id: pkg, quantity: 2 }] })).data;
      check(data[0].package_id === pkg && data[0].codes.length === 2, JSON.stringify(data));
    }],
    ["getExchangeRates", async () => {
      const data = (await sdk.getExchangeRates(null, null, null, "EUR,GBP")).data;
      check(sameSet(new Set(data.rates.map((r) => r.to)), new Set(["EUR", "GBP"])), JSON.stringify(data));
    }],
    ["getSimInstructions", async () => {
      const found = (await sdk.getSimInstructions(active, "en")).data.instructions;
      check(found.language === "EN" && found.ios.length && found.android.length, JSON.stringify(found));
    }],
    ["createFutureOrder", async () => {
      const due = new Date(Date.now() + 5 * 86400000).toISOString().slice(0, 16).replace("T", " ");
      const data = (await sdk.createFutureOrder(pkg, 1, due, null, "compat")).data;
      check(data.request_id.length === 25 && data.due_date === due, JSON.stringify(data));
      state.future = data.request_id;
    }],
    ["cancelFutureOrder", async () => {
      const body = await sdk.cancelFutureOrder([state.future]);
      check(/cancel/i.test(body.meta.message), JSON.stringify(body));
    }],
    ["getCompatibleDevices", async () => {
      const data = (await sdk.getCompatibleDevices()).data;
      check(data.length > 0 && data.every((d) => d.brand && d.name), JSON.stringify(data));
    }],
  ];
  for (const [name, call] of calls) await attempt(name, call);
  console.log(JSON.stringify(outcomes));
}

main().catch((error) => {
  console.log(JSON.stringify({ runner: `FAIL: ${error && error.stack}` }));
});
