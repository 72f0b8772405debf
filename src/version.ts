/** The kwollector release, printed by `kwollector version` and recorded with every forwarded batch. */
export const VERSION = "0.1.0";
