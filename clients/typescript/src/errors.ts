// Typed errors of the Spindle client: the gRPC status code plus the google.rpc details the server sends
// (ErrorInfo reason, BadRequest field violations) decoded from the grpc-status-details-bin trailer.
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";
import { BadRequest, ErrorInfo } from "./gen/google/rpc/error_details";
import { Status as RpcStatus } from "./gen/google/rpc/status";

export { Status };

/** One bad field of a request, from google.rpc.BadRequest. */
export interface FieldViolation {
  field: string;
  description: string;
}

const DETAILS_KEY = "grpc-status-details-bin";
const TYPE_PREFIX = "type.googleapis.com/";

/** A failed call: status code and message, ErrorInfo reason/domain/metadata, BadRequest field violations. */
export class SpindleError extends Error {
  readonly code: Status;
  readonly details: string;
  readonly reason: string;
  readonly domain: string;
  readonly errorMetadata: Record<string, string>;
  readonly fieldViolations: FieldViolation[];
  readonly metadata: Metadata | undefined;

  constructor(code: Status, details: string, opts: {
    reason?: string; domain?: string; errorMetadata?: Record<string, string>;
    fieldViolations?: FieldViolation[]; metadata?: Metadata;
  } = {}) {
    const fields = (opts.fieldViolations ?? []).map((v) => ` [${v.field}: ${v.description}]`).join("");
    super(`${Status[code] ?? code}: ${details}${fields}`);
    this.name = "SpindleError";
    this.code = code;
    this.details = details;
    this.reason = opts.reason ?? "";
    this.domain = opts.domain ?? "";
    this.errorMetadata = opts.errorMetadata ?? {};
    this.fieldViolations = opts.fieldViolations ?? [];
    this.metadata = opts.metadata;
  }

  /** The name of the status code, e.g. "INVALID_ARGUMENT". */
  get codeName(): string {
    return Status[this.code] ?? String(this.code);
  }

  /** The violation naming `field` exactly, or as the last dotted component of its path. */
  field(field: string): FieldViolation | undefined {
    return this.fieldViolations.find((v) => v.field === field || v.field.endsWith(`.${field}`));
  }

  /** Builds a SpindleError from an error raised by @grpc/grpc-js (other errors become UNKNOWN). */
  static from(err: unknown): SpindleError {
    if (err instanceof SpindleError) return err;
    const e = err as Partial<ServiceError>;
    if (typeof e?.code !== "number") {
      return new SpindleError(Status.UNKNOWN, err instanceof Error ? err.message : String(err));
    }
    const opts: ConstructorParameters<typeof SpindleError>[2] = { metadata: e.metadata, fieldViolations: [] };
    const raw = e.metadata?.get(DETAILS_KEY)?.[0];
    if (raw !== undefined && typeof raw !== "string") {
      for (const any of RpcStatus.decode(raw).details) {
        const type = any.typeUrl.startsWith(TYPE_PREFIX) ? any.typeUrl.slice(TYPE_PREFIX.length) : any.typeUrl;
        if (type === "google.rpc.BadRequest") {
          for (const v of BadRequest.decode(any.value).fieldViolations) {
            opts.fieldViolations!.push({ field: v.field, description: v.description });
          }
        } else if (type === "google.rpc.ErrorInfo") {
          const info = ErrorInfo.decode(any.value);
          opts.reason = info.reason;
          opts.domain = info.domain;
          opts.errorMetadata = info.metadata;
        }
      }
    }
    return new SpindleError(e.code, e.details ?? e.message ?? "", opts);
  }
}

/** Whether `err` is a SpindleError (or gRPC error) with the given status code. */
export function hasCode(err: unknown, code: Status): boolean {
  return SpindleError.from(err).code === code;
}
