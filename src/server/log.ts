// One line per event, level first, node id and term in every line.

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "text" | "json";

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export function isLogLevel(s: string): s is LogLevel {
  return s in RANK;
}

export class Logger {
  constructor(
    private readonly nodeId: number,
    private readonly termOf: () => number,
    private readonly level: LogLevel = "info",
    private readonly format: LogFormat = "text",
    private readonly out: (line: string) => void = (line) => process.stderr.write(line + "\n"),
    /** Milliseconds, for logAtMostEvery. */
    private readonly now: () => number = Date.now,
  ) {}

  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  /**
   * Log `msg` at most once per `ms`: a condition that can recur many times a second
   * (a stalled event loop) gets one line a second, counting the ones left out in `suppressed`.
   */
  logAtMostEvery(ms: number, level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    const now = this.now();
    const last = this.lastLogged.get(msg);
    if (last && now - last.at < ms) {
      last.suppressed++;
      return;
    }
    this.log(level, msg, last?.suppressed ? { ...fields, suppressed: last.suppressed } : fields);
    this.lastLogged.set(msg, { at: now, suppressed: 0 });
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= RANK[this.level];
  }

  log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
    if (!this.enabled(level)) return;
    const term = this.termOf();
    if (this.format === "json") {
      this.out(JSON.stringify({ level, ts: new Date().toISOString(), node: this.nodeId, term, msg, ...fields }));
      return;
    }
    let line = `${level.padEnd(5)} ${new Date().toISOString()} node=${this.nodeId} term=${term} ${msg}`;
    for (const [k, v] of Object.entries(fields)) line += ` ${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`;
    this.out(line);
  }

  debug(msg: string, fields?: Record<string, unknown>): void {
    this.log("debug", msg, fields);
  }
  info(msg: string, fields?: Record<string, unknown>): void {
    this.log("info", msg, fields);
  }
  warn(msg: string, fields?: Record<string, unknown>): void {
    this.log("warn", msg, fields);
  }
  error(msg: string, fields?: Record<string, unknown>): void {
    this.log("error", msg, fields);
  }
}
