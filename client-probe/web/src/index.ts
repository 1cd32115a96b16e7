// @synchealth/probe: sync-health telemetry from the browser (README, "From the browser").
export { Probe, Attempt } from "./probe";
export type {
  ConflictDetail,
  ConflictKind,
  ConflictResolution,
  Details,
  ErrorKind,
  Network,
  ProbeOptions,
  ProbeStats,
  SyncEvent,
  Trigger,
} from "./types";
