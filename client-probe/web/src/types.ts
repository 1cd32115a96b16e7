// The wire contract (schema/README.md) as TypeScript types, and the probe's
// options and stats, named as in the Rust probe (client-probe/src).

/** One sync attempt, as `POST /v1/events` takes it. */
export interface SyncEvent {
  event_id: string;
  device_id: string;
  occurred_at: string;
  success: boolean;
  duration_ms: number;
  conflicts?: number;
  queue_depth?: number;
  last_success_at?: string | null;
  app_version: string;
  os: string;
  os_version?: string;
  network?: Network;
  device_model?: string;
  sync_type?: string;
  trigger?: Trigger;
  error_kind?: ErrorKind;
  error_message?: string;
  retries?: number;
  records_up?: number;
  records_down?: number;
  bytes_up?: number;
  bytes_down?: number;
  sample_rate?: number;
  /** At most 32 entries adding up to at most `conflicts` (the probe keeps them so). */
  conflict_details?: ConflictDetail[];
  /** When the oldest still-pending local change was made; absent when the queue is empty. */
  queue_oldest_at?: string;
  /** At most 8 custom low-cardinality values: keys `[a-z][a-z0-9_]*` (<= 32), values 1..=64 characters. */
  dimensions?: Record<string, string>;
}

/** Conflicts of one kind on one entity type, settled one way. */
export interface ConflictDetail {
  /** Table, collection or record type, 1..=64 characters. */
  entity: string;
  kind: ConflictKind;
  resolution: ConflictResolution;
  /** At least 1. */
  count: number;
}

export type ConflictKind = "update_update" | "update_delete" | "delete_update" | "insert_insert" | "constraint" | "other";
/** The first three keep one side and drop the other's edit. */
export type ConflictResolution = "last_write_wins" | "server_wins" | "client_wins" | "crdt_merge" | "manual" | "custom" | "unresolved";

export type Network = "wifi" | "cellular" | "ethernet" | "offline" | "unknown";
export type Trigger = "app_open" | "resume" | "user" | "local_write" | "scheduled" | "reconnect" | "other";
export type ErrorKind = "network" | "timeout" | "server" | "auth" | "validation" | "conflict" | "cancelled" | "unknown";

/** What an attempt moved and met; every field defaults to 0. */
export interface Details {
  conflicts?: number;
  queue_depth?: number;
  retries?: number;
  records_up?: number;
  records_down?: number;
  bytes_up?: number;
  bytes_down?: number;
}

export interface ProbeOptions {
  /** The collector's base URL, e.g. `https://sync-health.example.com`. */
  endpoint: string;
  /** The project's public ingest key (`shk_...`). */
  ingestKey: string;
  appVersion: string;
  /** Default `web`. */
  os?: string;
  osVersion?: string;
  deviceModel?: string;
  /** Keep this share of successes (weight 1/rate); failures are always kept. Default 1. */
  sampleRate?: number;
  /** Milliseconds between uploads when no full batch waits. Default 30 000. */
  uploadInterval?: number;
  /** Events per request. Default 500. */
  batchSize?: number;
  /** Buffer bounds; past one, successes are thinned, then the oldest dropped. */
  maxEvents?: number;
  maxBytes?: number;
  /** Events older than this (ms) expire unsent. Default 7 days. */
  maxAge?: number;
  /** Backoff bounds (ms), full jitter. Default 1 s and 5 min. */
  minBackoff?: number;
  maxBackoff?: number;
  /** IndexedDB database name, shared by the tabs (and service worker) of one app. Default `synchealth`. */
  dbName?: string;
  /**
   * Custom dimensions on every event (`{ engine: "powersync", plan: "pro" }`): at most 8, keys
   * `[a-z][a-z0-9_]*` of at most 32 characters, values 1 to 64 characters. A bad one is dropped
   * (a long value cut) and counted in `stats().adjusted`, never thrown.
   */
  dimensions?: Record<string, string>;
  /** Test hook: `false` forces the in-memory buffer. */
  indexedDB?: IDBFactory | false;
}

/** What the probe did since it started (this tab or worker). */
export interface ProbeStats {
  recorded: number;
  sampled_out: number;
  restored: number;
  uploaded: number;
  duplicates: number;
  thinned: number;
  dropped: Record<string, number>;
  buffered: number;
  upload_failures: number;
  /** Inputs bounded to fit the contract (cut, folded or dropped), by reason; not events. */
  adjusted: Record<string, number>;
  /** `indexeddb` or `memory`. */
  storage: string;
}
