import assert from "node:assert/strict";
import { PromotionFilter, PromotionRefresher } from "../../src/collect/promotion.ts";
import { setLogLevel, setLogSink } from "../../src/log.ts";
import { FakeClock } from "../helpers/fake_clock.ts";

Deno.test("promotion refresher measures how long promoted_metrics failed on the monotonic clock, across a clock step", async () => {
  let reachable = false;
  const clock = new FakeClock();
  const refresher = new PromotionRefresher({
    filter: new PromotionFilter(),
    saved: { readPromoted: () => [], writePromoted: () => {} },
    central: {
      read: () => reachable ? Promise.resolve([]) : Promise.reject(new Error("connect ECONNREFUSED 127.0.0.1:5432")),
      drop: () => Promise.resolve(),
    },
    refreshMs: 1000,
    clock,
  });
  const logs: string[] = [];
  setLogLevel("info");
  setLogSink((l) => logs.push(l));
  try {
    assert.equal(await refresher.refresh(), false);
    clock.stepWallClock(-3_600_000);
    await clock.advance(5000);
    reachable = true;
    assert.equal(await refresher.refresh(), true);
    const recovered = logs.find((l) => /promoted_metrics reachable again/.test(l));
    assert.match(recovered ?? "", /failing_for_s=5\b/);
  } finally {
    setLogSink((l) => console.error(l));
    setLogLevel("warning");
  }
});
