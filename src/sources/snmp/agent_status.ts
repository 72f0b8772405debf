/** The agent answered with a non-zero error-status (v1 noSuchName, tooBig, genErr...). */
export class AgentStatusError extends Error {
  /** RFC 3416 error-status: 1 tooBig, 2 noSuchName, 5 genErr... */
  readonly status: number;
  /** The OID the error-index points at, when the agent gave one. */
  readonly oid: string | undefined;
  constructor(message: string, status: number, oid: string | undefined) {
    super(message);
    this.name = "AgentStatusError";
    this.status = status;
    this.oid = oid;
  }
}

export const ErrorStatus = { TooBig: 1, NoSuchName: 2 } as const;
