import type { Protocol } from "./source.ts";
import { prometheus } from "./prometheus.ts";

/** URL scheme → protocol. One line per protocol. */
export const PROTOCOLS: Record<string, Protocol> = {
  prometheus,
};
